"""The MongoDB adapter (registry key ``mongodb``): ``adapter`` (``MongoAdapter``), its ledger, lease,
server facts, document transform and the Node runner of migrate-mongo files (``js``, ``node/``).

Nothing is imported here, so a module of this package does not import the adapter and pymongo."""
