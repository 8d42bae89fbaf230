"""The Redis adapter (registry key ``redis``): ``adapter`` (``RedisAdapter``), its lease, Lua scripts
and new-file templates.

Nothing is imported here, so reading ``templates`` (CLI) does not import the adapter and redis-py.
Imports are absolute: ``import redis`` inside this package is redis-py, not this package."""
