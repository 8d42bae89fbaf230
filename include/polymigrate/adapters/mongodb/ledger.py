"""The MongoDB ledger: one document per (domain, version) in a collection of the domain's database.

Fields are Flyway's (``installed_rank, version, description, type, script, checksum, installed_by,
installed_on, execution_time, success``) plus ``status, domain, sha256, run_id, environment,
region, plan_hash, progress`` (the checkpoint of a running migration) and three of its own:

* ``attempt``: a random id of this application of the migration. Documents a batched transform
  changes are marked with it (``transform``), so a resumed or duplicated batch skips them;
* ``fence``: the lock token of the last holder that wrote the row. Every write is conditional on
  ``fence <= <our token>`` and sets it to our token, so once a newer holder has written a row, an
  older one (paused past its lease) can no longer change it. A new holder raises the fence of the
  unfinished rows as soon as it takes the lock;
* ``history``: earlier applications (undone, re-applied), newest last.

``_id`` is ``<domain>:<version>`` and a unique index on (domain, version) backs it: two runs can
never both record the same version.
"""

from __future__ import annotations

import getpass
import json
import uuid
from datetime import datetime, timezone
from typing import Any

from bson import json_util
from pymongo import ASCENDING, DESCENDING
from pymongo import errors as perr

from polymigrate.adapters.mongodb.lease import LeaseLost
from polymigrate.catalog import Migration
from polymigrate.ledger import LedgerEntry, RunContext, Status
from polymigrate.recovery import UNTOUCHED

DEFAULT_NAME = "polymigrate_schema_history"
UNIQUE_INDEX = "domain_version_unique"
_OPEN = [Status.STARTED.value, Status.FAILED.value]


class AlreadyApplied(Exception):
    """The row is already ``success``: another run recorded it after this run read the ledger."""

    def __init__(self, row: dict):
        self.row = row
        super().__init__(f"already applied by run {row.get('run_id')}")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def jsonable(value: Any) -> Any:
    """BSON values (ObjectId, datetime, Decimal128 …) as JSON-safe Extended JSON, for LedgerEntry.progress."""
    return json.loads(json_util.dumps(value, json_options=json_util.RELAXED_JSON_OPTIONS))


class MongoLedger:
    """The ledger and lock collections of one domain in one database."""

    def __init__(self, db: Any, domain: str, name: str | None = None):
        self.db = db
        self.domain = domain
        self.name = name or DEFAULT_NAME
        self.collection = db[self.name]
        self.lock_collection = db[f"{self.name}_lock"]
        self._ready = False

    @property
    def qualified(self) -> str:
        return f"{self.db.name}.{self.name}"

    def row_id(self, version: Any) -> str:
        return f"{self.domain}:{version}"

    def ensure(self) -> None:
        """Create the unique (domain, version) index once (idempotent; creates the collection too)."""
        if self._ready:
            return
        self.collection.create_index([("domain", ASCENDING), ("version", ASCENDING)], name=UNIQUE_INDEX, unique=True)
        self._ready = True

    # -- reading ----------------------------------------------------------------------------

    def rows(self) -> list[dict]:
        rows = list(self.collection.find({"domain": self.domain}))
        return sorted(rows, key=lambda r: (r.get("installed_rank") or 0, str(r.get("version"))))

    def get(self, version: Any) -> dict | None:
        return self.collection.find_one({"_id": self.row_id(version)})

    @staticmethod
    def entry(row: dict) -> LedgerEntry:
        installed_on = row.get("installed_on")
        if isinstance(installed_on, datetime) and installed_on.tzinfo is None:
            installed_on = installed_on.replace(tzinfo=timezone.utc)
        return LedgerEntry(
            installed_rank=int(row.get("installed_rank") or 0), version=row.get("version"),
            description=row.get("description", ""), type=row.get("type", ""), script=row.get("script", ""),
            checksum=row.get("checksum"), installed_by=row.get("installed_by", ""), installed_on=installed_on,
            execution_time=int(row.get("execution_time") or 0), success=bool(row.get("success")),
            status=Status(row.get("status", Status.SUCCESS.value)), domain=row.get("domain", ""),
            sha256=row.get("sha256"), run_id=row.get("run_id"), environment=row.get("environment"),
            region=row.get("region"), plan_hash=row.get("plan_hash"), progress=jsonable(row.get("progress") or {}))

    def entries(self) -> list[LedgerEntry]:
        return [self.entry(r) for r in self.rows()]

    def next_rank(self) -> int:
        top = list(self.collection.find({"domain": self.domain}, {"installed_rank": 1})
                   .sort("installed_rank", DESCENDING).limit(1))
        return int(top[0].get("installed_rank") or 0) + 1 if top else 1

    # -- fenced writes ----------------------------------------------------------------------

    def raise_fences(self, token: int) -> None:
        """A new lock holder claims every unfinished row, so an older holder can no longer write them."""
        self.collection.update_many({"domain": self.domain, "status": {"$in": _OPEN}}, {"$max": {"fence": token}})

    def update(self, row_id: str, token: int, fields: dict, *, expect: dict | None = None,
               extra: dict | None = None, what: str = "the ledger write") -> None:
        """``$set fields`` (and ``fence = token``) if no newer lock holder wrote the row; else LeaseLost."""
        result = self.collection.update_one({"_id": row_id, "fence": {"$lte": token}, **(expect or {})},
                                            {"$set": {**fields, "fence": token}, **(extra or {})})
        if result.matched_count:
            return
        row = self.collection.find_one({"_id": row_id}, {"fence": 1, "status": 1, "run_id": 1}) or {}
        if row.get("fence", 0) > token:
            raise LeaseLost(f"{self.qualified}: {row_id} was taken over by a newer lock holder (token "
                            f"{row.get('fence')}, run {row.get('run_id')}; ours was {token}); {what} was refused",
                            hint="nothing more was written by this run; the other run continues")
        raise LeaseLost(f"{self.qualified}: {row_id} changed under this run (now {row.get('status', 'gone')}); "
                        f"{what} was refused", hint="retry: the run re-reads the ledger under the lock")

    def start(self, migration: Migration, ctx: RunContext, token: int) -> tuple[dict, bool]:
        """The row of a migration about to run, marked ``started`` under ``token``.

        Returns (row, resumed): ``resumed`` when an unfinished row (ours from an earlier try, or one a
        paused holder left) is taken over with its attempt and checkpoint. Raises ``AlreadyApplied``
        when the version is already recorded as done.
        """
        rid = self.row_id(migration.version)
        run = {"run_id": ctx.run_id, "installed_by": ctx.actor or getpass.getuser(), "environment": ctx.environment,
               "region": ctx.region, "plan_hash": ctx.plan_hash}
        for _ in range(3):
            row = self.collection.find_one({"_id": rid})
            if row is None:
                doc = {"_id": rid, "domain": self.domain, "version": str(migration.version),
                       "description": migration.description, "type": migration.ledger_type,
                       "script": migration.script, "checksum": migration.checksum, "sha256": migration.sha256,
                       "installed_rank": self.next_rank(), "installed_on": _now(), "execution_time": 0,
                       "success": False, "status": Status.STARTED.value, "attempt": uuid.uuid4().hex,
                       "fence": token, "progress": {}, "history": [], **run}
                try:
                    self.collection.insert_one(doc)
                    return doc, False
                except perr.DuplicateKeyError:
                    continue  # recorded a moment ago by another run: read it again
            status = row.get("status")
            if status in (Status.SUCCESS.value, Status.BASELINE.value):
                raise AlreadyApplied(row)
            if status in _OPEN:
                # a try that changed nothing (polymigrate.recovery): start over, with the file as it is now
                fresh = {"progress": {}, "checksum": migration.checksum, "sha256": migration.sha256,
                         "script": migration.script, "description": migration.description} \
                    if (row.get("progress") or {}).get(UNTOUCHED) else {}
                self.update(rid, token, {"status": Status.STARTED.value, **run, **fresh}, expect={"status": status},
                            what="taking over the unfinished row")
                row.update(status=Status.STARTED.value, fence=token, **run, **fresh)
                return row, not fresh
            # undone or deleted: applied again as a new attempt; the previous one goes to history
            previous = {k: row.get(k) for k in ("status", "attempt", "run_id", "installed_on", "installed_by",
                                                 "checksum", "execution_time")}
            fields = {"status": Status.STARTED.value, "success": False, "attempt": uuid.uuid4().hex,
                      "installed_rank": self.next_rank(), "installed_on": _now(), "execution_time": 0,
                      "progress": {}, "checksum": migration.checksum, "sha256": migration.sha256,
                      "script": migration.script, "description": migration.description,
                      "type": migration.ledger_type, **run}
            self.update(rid, token, fields, expect={"status": status}, extra={"$push": {"history": previous}},
                        what="re-applying the undone version")
            row.update(fields, fence=token)
            return row, False
        raise LeaseLost(f"{self.qualified}: {rid} keeps changing under this run", hint="retry")

    def insert_done(self, doc: dict) -> bool:
        """Insert an already-applied row (baseline, import); False if the version is recorded already."""
        try:
            self.collection.insert_one(doc)
            return True
        except perr.DuplicateKeyError:
            return False
