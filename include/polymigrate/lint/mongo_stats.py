"""Collection statistics of a MongoDB target, for impact-aware MongoDB lint (read only, cached).

``polymigrate lint --url mongodb://…`` (or ``lint_catalog(…, mongo=<pymongo Database>)``) lets the
MongoDB rules score a finding by what it would really touch: an index build or an unbounded
``updateMany`` on 200 documents is low, on 50 million high; a strict validator on a collection whose
documents all conform is low, one that 3,000 documents violate is high.
"""

from __future__ import annotations

from typing import Any

SMALL = 10_000         # documents: below this a whole-collection write or index build is quick
LARGE = 1_000_000      # documents: above this it is an event on the primary and its secondaries


def level(count: int | None, default: str) -> str:
    """Severity of touching ``count`` documents at once (``default`` when the collection is unknown)."""
    if count is None:
        return default
    return "low" if count < SMALL else "medium" if count < LARGE else "high"


class MongoStats:
    def __init__(self, db: Any):
        # pymongo only here, where a client exists: `validate` imports the MongoDB rules without one,
        # and a project of PostgreSQL alone installs no MongoDB driver
        from pymongo.errors import PyMongoError

        self._read_error = PyMongoError
        self.db = db
        self._counts: dict[str, int | None] = {}
        self._names: set[str] | None = None

    def _collections(self) -> set[str]:
        if self._names is None:
            try:
                self._names = set(self.db.list_collection_names())
            except self._read_error:
                self._names = set()
        return self._names

    def count(self, collection: str | None) -> int | None:
        """Estimated documents in ``collection``; None when it does not exist (or cannot be read)."""
        if not collection:
            return None
        if collection not in self._counts:
            if collection not in self._collections():
                self._counts[collection] = None
            else:
                try:
                    self._counts[collection] = int(self.db[collection].estimated_document_count())
                except self._read_error:
                    self._counts[collection] = None
        return self._counts[collection]

    def describe(self, collection: str | None) -> str:
        n = self.count(collection)
        return f"{collection} not found on the target" if n is None else f"{collection} holds ~{n:,} documents"

    def nonconforming(self, collection: str, validator: dict) -> int | None:
        """Documents of ``collection`` the validator would reject; None when the server cannot say
        (FerretDB has no ``$jsonSchema`` queries) or the count takes too long."""
        if self.count(collection) is None:
            return None
        try:
            return int(self.db[collection].count_documents({"$nor": [validator]}, maxTimeMS=10_000))
        except self._read_error:
            return None
