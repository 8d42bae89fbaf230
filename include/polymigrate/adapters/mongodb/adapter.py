"""The MongoDB adapter: versioned commands, resumable document transforms, migrate-mongo files,
a ledger collection and a fenced lease.

Migration files (``{version}-{description}.{json,py,js}``, ordered by version):

* ``.json``: ``{"description", "commands": [<database command>…], "down": [<database command>…]}``, run
  in order against the domain's database; the ledger row counts the commands done, so a retry
  continues after the last one that finished (and accepts "already exists" from the one in flight);
* ``.py``: ``up(db, ctx)`` and optionally ``down(db, ctx)`` (``up(db)`` works too); ``ctx.transform``
  is the batched, checkpointed, exactly-once document transform (``transform``);
* ``.js``: migrate-mongo's ``module.exports = {up(db, client), down(db, client)}``, run unchanged by
  Node with the official driver (``js``); a file runs whole, like migrate-mongo runs it.

MongoDB has no transaction spanning a migration and its ledger row (FerretDB none at all), so a row
is ``started`` first, carries the checkpoint while the migration runs and becomes ``success`` at the
end; every one of those writes is fenced by the lock token (``ledger``, ``lease``).
"""

from __future__ import annotations

import logging
import time
import types
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pymongo
from bson import json_util
from pymongo import errors as perr

from polymigrate.adapters.base import Adapter, Applied, Capabilities, RepairReport
from polymigrate.adapters.mongodb import js as mongo_js
from polymigrate.adapters.mongodb.adoption import ImportReport, MongoAdoption  # noqa: F401  (ImportReport: callers')
from polymigrate.adapters.mongodb.checks import MongoChecks, declared_indexes  # noqa: F401  (declared_indexes: callers')
from polymigrate.adapters.mongodb.lease import Lease, LeaseLost, ServerClock
from polymigrate.adapters.mongodb.ledger import AlreadyApplied, MongoLedger
from polymigrate.adapters.mongodb.runner import MongoRunner, _line_in
from polymigrate.adapters.mongodb.server import ServerInfo, classify, not_supported_error, server_info, unsupported
from polymigrate.catalog import Kind, Migration
from polymigrate.connections import redact
from polymigrate.errors import MigrationError, PermanentError, Problem, SpecError, TransientError
from polymigrate.ledger import LedgerEntry, RunContext, Status
from polymigrate.reconcile import State, reconcile
from polymigrate.recovery import UNTOUCHED

log = logging.getLogger("polymigrate.mongo")
DEFAULT_LEASE_MS = 15_000


@dataclass
class MongoConnection:
    """A pymongo client plus what a Node child needs to reach the same server (its URL), built by the
    Airflow layer from ``MongoHook`` or by ``MongoAdapter.from_url``."""

    client: Any
    url: str | None = None
    database: str | None = None

    def close(self) -> None:
        self.client.close()


class MongoAdapter(MongoRunner, MongoAdoption, MongoChecks, Adapter):
    """Adapter for one MongoDB database (and one domain in it).

    ``client``: a ``pymongo.MongoClient``, a ``MongoConnection`` or a ``mongodb://`` URL. The database is
    the one the connection names (``mongodb://host/DB``, the Airflow connection's schema), else the
    domain's ``mongodb.database`` setting: each environment and region names its own database in its
    connection, and a domain-wide name must not put them all in one (one ledger). ``settings.ledger``
    names the ledger collection (default ``polymigrate_schema_history``, lock in ``<ledger>_lock``).
    """

    technology = "mongodb"
    capabilities = Capabilities(transactional=False, reversible=True, resumable=True, adopts="migrate-mongo")

    def __init__(self, client: Any, *, domain: str, settings: Any = None, lease_ms: int = DEFAULT_LEASE_MS):
        default_db = None
        self._url: str | None = None
        self._owns_client = False
        if isinstance(client, str):
            self._url = client
            client = pymongo.MongoClient(client)
            self._owns_client = True
        if isinstance(client, MongoConnection):
            self._url, default_db, client = client.url, client.database, client.client
        super().__init__(client, domain=domain, settings=settings)
        if default_db is None:
            try:
                default_db = client.get_default_database().name
            except perr.ConfigurationError:
                default_db = None
        database = default_db or getattr(settings, "database", None)
        if not database:
            raise PermanentError(f"no MongoDB database for domain {domain}",
                                 hint="set technologies.mongodb.database in domain.yaml, or a database in the "
                                      "connection (mongodb://host/DB, the Airflow connection's schema)")
        self.db = client[database]
        self.ledger = MongoLedger(self.db, domain, getattr(settings, "ledger", None))
        self.lease_ms = lease_ms
        self._lease: Lease | None = None
        self._clock: ServerClock | None = None
        self._server: ServerInfo | None = None
        self._modules: dict[tuple[str, str], types.ModuleType] = {}

    @classmethod
    def from_url(cls, url: str, *, domain: str, settings: Any = None, **kw: Any) -> "MongoAdapter":
        """``mongodb://[user:password@]host:port/DB[?options]`` (also ``mongodb+srv://``, and Airflow's
        ``mongo://…[?srv=true]``); ``?lease_ms=N`` sets the lock lease (how long a crashed run blocks the
        next one; default 15 s). The other options go to the driver."""
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        srv = any(k == "srv" and v.lower() in ("1", "true", "yes") for k, v in query)
        if parts.scheme == "mongo":  # Airflow's connection URI for conn_type 'mongo' (AIRFLOW_CONN_…)
            parts = parts._replace(scheme="mongodb+srv" if srv else "mongodb")
        kept = [(k, v) for k, v in query if k not in ("lease_ms", "srv")]
        for k, v in query:
            if k == "lease_ms":
                kw.setdefault("lease_ms", int(v))
        clean = urlunsplit(parts._replace(query=urlencode(kept)))
        database = parts.path.lstrip("/") or None
        # a dead server fails a run in 10 s, not pymongo's 30 s, unless the URL says otherwise
        timeout = {} if any(k.lower() == "serverselectiontimeoutms" for k, _ in kept) else {"serverSelectionTimeoutMS": 10_000}
        client = pymongo.MongoClient(clean, **timeout)
        adapter = cls(MongoConnection(client, clean, database), domain=domain, settings=settings, **kw)
        adapter._owns_client = True
        return adapter

    # -- what we talk to ------------------------------------------------------------------------

    @property
    def server(self) -> ServerInfo:
        if self._server is None:
            try:
                self._server = server_info(self.client)
            except perr.PyMongoError as exc:
                raise classify(exc, what=f"cannot reach {self._where()}") from exc
        return self._server

    def _where(self) -> str:
        if self._url:
            parts = urlsplit(redact(self._url))
            return f"mongodb://{parts.netloc}/{self.db.name}"
        try:
            host, port = self.client.address or ("?", "?")
        except perr.PyMongoError:
            host, port = "?", "?"
        return f"mongodb://{host}:{port}/{self.db.name}"

    @property
    def target(self) -> str:
        """``mongodb://[user:***@]host:port/db``: never the password."""
        return self._where()

    @property
    def clock(self) -> ServerClock:
        if self._clock is None:
            self._clock = ServerClock(self.client)
        return self._clock

    def close(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._owns_client:
            self.client.close()

    # -- ledger and lock -----------------------------------------------------------------------

    def _ensure(self) -> None:
        try:
            self.ledger.ensure()
        except perr.PyMongoError as exc:
            raise classify(exc, server=self._server, file=self.ledger.qualified,
                           what=f"cannot create the ledger on {self.target}") from exc

    def read_ledger(self) -> list[LedgerEntry]:
        self._ensure()
        try:
            return self.ledger.entries()
        except perr.PyMongoError as exc:
            raise classify(exc, file=self.ledger.qualified, what="cannot read the ledger") from exc

    @contextmanager
    def lock(self, owner: str, wait_seconds: float) -> Iterator[None]:
        """The domain's lease; LockNotAcquired names the holder after ``wait_seconds``."""
        self._ensure()
        lease = Lease(self.ledger.lock_collection, self.domain, owner, self.lease_ms, self.clock, self.target)
        token = lease.acquire(wait_seconds)
        try:
            self.ledger.raise_fences(token)
            self._lease = lease
            yield
        finally:
            self._lease = None
            lease.release()

    @contextmanager
    def _held(self, ctx: RunContext) -> Iterator[Lease]:
        """The lease of the surrounding ``lock()``, or one taken for this call alone."""
        if self._lease is not None:
            yield self._lease
            return
        with self.lock(ctx.owner, ctx.lock_wait_seconds):
            assert self._lease is not None
            yield self._lease

    # -- checks before anything runs ----------------------------------------------------------------

    def preflight(self, items: list[tuple[Migration, str]], *, direction: str = "up") -> None:
        """Refuse a run before it starts: JSON commands the server lacks (naming command and server),
        ``.py`` files that do not compile or import, ``.js`` files that do not compile or ``require``
        modules that are not installed."""
        problems: list[Problem] = []
        refused: list[PermanentError] = []
        js: list[tuple[Any, str]] = []
        for m, body in items:
            suffix = m.path.suffix.lower()
            try:
                if suffix == ".json":
                    for line, cmd in self._commands(m, body, direction):
                        what = unsupported(cmd, self.server, database=self.db.name)
                        if what:
                            refused.append(not_supported_error(what, self.server, file=m.path, line=line,
                                                               statement=json_util.dumps(cmd)[:300]))
                            break
                elif suffix == ".py":
                    module = self._module(m, body)
                    if not callable(getattr(module, direction, None)):
                        problems.append(Problem(str(m.path), f"defines no {direction}(db, ctx) function",
                                                hint=f"add def {direction}(db, ctx): …"))
                elif suffix == ".js":
                    js.append((m.path, body))
            except SpecError as exc:
                problems += exc.problems
        if js:
            problems += mongo_js.check(js)
        if problems:
            raise SpecError(problems)
        if refused:
            if len(refused) == 1:
                raise refused[0]
            raise PermanentError("these migrations need what " + self.server.describe() + " lacks; nothing was run:\n  "
                                 + "\n  ".join(str(r).split("\n")[0] for r in refused), hint=refused[0].hint)

    def inline_undo(self, migration: Migration) -> bool:
        """MongoDB migrations carry their own undo: ``down`` in .py/.js, ``"down"`` in .json."""
        suffix = migration.path.suffix.lower()
        text = migration.text
        if suffix == ".json":
            try:
                return bool(json_util.loads(text).get("down"))
            except (ValueError, AttributeError):
                return False
        if suffix == ".py":
            return "def down(" in text
        return suffix == ".js" and "down" in text

    # -- apply ------------------------------------------------------------------------------

    def apply(self, migration: Migration, body: str, ctx: RunContext, resume: LedgerEntry | None = None) -> Applied:
        """Run one migration and record it (see the module docstring)."""
        self._ensure()
        with self._held(ctx) as lease:
            lease.assert_held(f"starting {migration.script}")
            try:
                row, resumed = self.ledger.start(migration, ctx, lease.token)  # type: ignore[arg-type]
            except AlreadyApplied as done:
                log.info("%s: already applied by run %s; nothing to do", migration.script, done.row.get("run_id"))
                return Applied(0, details={"already_applied_by": done.row.get("run_id")})
            except perr.PyMongoError as exc:
                raise classify(exc, server=self.server, file=migration.path, what="writing the 'started' row") from exc
            started = time.monotonic()
            spent = int(row.get("execution_time") or 0)
            self._refused_first = False  # _run_json: the server refused the first command, nothing ran
            try:
                details = self._run(migration, body, ctx, row, lease, "up", resumed)
            except Exception as exc:  # noqa: BLE001  classified, recorded as failed, re-raised
                error = self._error(exc, migration)
                self._mark_failed(row, lease, error, spent + int((time.monotonic() - started) * 1000),
                                  # not a transient error: a timed-out command may still have run
                                  untouched=self._refused_first and not resumed
                                  and not isinstance(error, TransientError))
                raise error from exc
            ms = spent + int((time.monotonic() - started) * 1000)
            try:
                self.ledger.update(row["_id"], lease.token, {  # type: ignore[arg-type]
                    "status": Status.SUCCESS.value, "success": True, "execution_time": ms,
                    "installed_on": datetime.now(timezone.utc).replace(tzinfo=None)},
                    extra={"$unset": {"progress.error": ""}}, what="recording success")
            except perr.PyMongoError as exc:
                # the work is done and checkpointed: a retry finds every step done and only records success
                raise classify(exc, server=self.server, file=migration.path, what="recording success") from exc
        return Applied(ms, statements=details.get("steps", 0), details={**details, "resumed": resumed})

    def _mark_failed(self, row: dict, lease: Lease, error: Exception, ms: int, untouched: bool = False) -> None:
        if isinstance(error, LeaseLost):
            return  # another run owns the row now
        # untouched: a fixed file may rerun with its new text (polymigrate.recovery)
        mark = {f"progress.{UNTOUCHED}": True} if untouched else {}
        try:
            self.ledger.update(row["_id"], lease.token, {"status": Status.FAILED.value, "success": False,  # type: ignore[arg-type]
                                                          "execution_time": ms, "progress.error": str(error)[:2000],
                                                          **mark},
                               what="recording the failure")
        except (perr.PyMongoError, LeaseLost):
            pass  # the row stays 'started', which resumes the same way

    def _error(self, exc: BaseException, migration: Migration) -> PermanentError:
        if isinstance(exc, (MigrationError, SpecError)):
            return exc  # type: ignore[return-value]
        line, text = _line_in(exc, migration)
        if isinstance(exc, perr.PyMongoError):
            return classify(exc, server=self.server, file=migration.path, line=line, statement=text)
        return PermanentError(f"{type(exc).__name__}: {exc}", file=migration.path, line=line, statement=text,
                              hint="fix the migration; the run resumes from its last checkpoint")

    def _run(self, m: Migration, body: str, ctx: RunContext, row: dict, lease: Lease, direction: str,
             resumed: bool) -> dict:
        suffix = m.path.suffix.lower()
        # checkpoints of an undo live beside those of the apply they revert
        area = "progress" if direction == "up" else "progress.undo"
        progress = row.get("progress") or {}
        if direction != "up":
            progress = progress.get("undo") or {}
        rid, token = row["_id"], lease.token

        def checkpoint(fields: dict) -> None:
            self.ledger.update(rid, token, {f"{area}.{k}": v for k, v in fields.items()},  # type: ignore[arg-type]
                               what="the checkpoint")

        if suffix == ".json":
            return self._run_json(m, body, direction, progress, checkpoint, lease, resumed)
        if suffix == ".py":
            return self._run_py(m, body, ctx, direction, row, progress, checkpoint, lease, resumed)
        if suffix == ".js":
            ms = mongo_js.run(m.path, body, direction, url=self._node_url(), database=self.db.name,
                              lease={"collection": self.ledger.lock_collection.name, "key": self.domain,
                                     "holder": lease.holder, "token": lease.token, "every_ms": max(self.lease_ms // 3, 200)})
            return {"steps": 1, "node_ms": ms}
        raise PermanentError(f"not a MongoDB migration file type: {suffix}", file=m.path)

    # -- undo, baseline, repair ------------------------------------------------------------------

    def undo(self, undo_migration: Migration, body: str, ctx: RunContext) -> Applied:
        """Run ``down`` of an applied migration and mark its version undone (pending again)."""
        m = undo_migration
        self._ensure()
        with self._held(ctx) as lease:
            row = self.ledger.get(m.version)
            if row is None or row.get("status") != Status.SUCCESS.value:
                raise PermanentError(f"cannot undo version {m.version}: it is {row.get('status') if row else 'not applied'}",
                                     file=m.path, hint="only a successfully applied version can be undone")
            if not self.inline_undo(m):
                raise PermanentError(f"{m.script} has no down()", file=m.path,
                                     hint="add down(db, ctx) (.py), down(db, client) (.js) or \"down\": [...] (.json)")
            self.preflight([(m, body)], direction="down")
            lease.assert_held(f"undoing {m.script}")
            self.ledger.update(row["_id"], lease.token, {"undo_started_by": ctx.run_id}, expect={"status": Status.SUCCESS.value},  # type: ignore[arg-type]
                               what="starting the undo")
            started = time.monotonic()
            try:
                details = self._run(m, body, ctx, row, lease, "down", bool((row.get("progress") or {}).get("undo")))
            except Exception as exc:  # noqa: BLE001
                raise self._error(exc, m) from exc
            ms = int((time.monotonic() - started) * 1000)
            previous = {k: row.get(k) for k in ("status", "attempt", "run_id", "installed_on", "installed_by",
                                                 "checksum", "execution_time")}
            previous["undone_by"] = ctx.run_id
            previous["undo_ms"] = ms
            self.ledger.update(row["_id"], lease.token, {"status": Status.UNDONE.value, "success": False,  # type: ignore[arg-type]
                                                          },
                               extra={"$push": {"history": previous}, "$unset": {"progress.undo": ""}},
                               what="recording the undo")
        return Applied(ms, details.get("steps", 0), {"undone": str(m.version), **details})

    def baseline(self, version: str, description: str, ctx: RunContext) -> None:
        """Mark everything up to ``version`` as applied without running it (an empty ledger only)."""
        with self._held(ctx) as lease:
            if not self._baseline_wanted(version, self.ledger.qualified):
                return
            now = datetime.now(timezone.utc).replace(tzinfo=None)
            self.ledger.insert_done({
                "_id": self.ledger.row_id(version), "domain": self.domain, "version": version,
                "description": description or "<< Baseline >>", "type": "BASELINE",
                "script": description or "<< Baseline >>", "checksum": None, "sha256": None,
                "installed_rank": self.ledger.next_rank(), "installed_on": now, "installed_by": ctx.actor or "unknown",
                "execution_time": 0, "success": True, "status": Status.BASELINE.value, "run_id": ctx.run_id,
                "environment": ctx.environment, "region": ctx.region, "plan_hash": ctx.plan_hash, "attempt": None,
                "fence": lease.token, "progress": {}, "history": []})

    def repair(self, migrations: list[Migration], ctx: RunContext) -> RepairReport:
        """Realign checksums of changed files; mark rows whose file is gone deleted.

        A half-done migration keeps its row, attempt and checkpoints: only its checksum is realigned,
        so the next run resumes and its transforms skip the documents they already changed.
        """
        report = RepairReport([], [])
        with self._held(ctx) as lease:
            infos = reconcile([m for m in migrations if m.kind is not Kind.UNDO], self.read_ledger(), out_of_order=True)
            for i in infos:
                if i.entry is None:
                    continue
                rid = self.ledger.row_id(i.entry.version)
                if i.state is State.MISSING:
                    self.ledger.update(rid, lease.token, {"status": Status.DELETED.value, "success": False},  # type: ignore[arg-type]
                                       what="repair")
                    report.removed.append(i.entry.script)
                elif i.state is State.CHANGED and i.migration is not None:
                    m = i.migration
                    self.ledger.update(rid, lease.token, {"checksum": m.checksum, "sha256": m.sha256,  # type: ignore[arg-type]
                                                          "description": m.description, "script": m.script},
                                       what="repair")
                    report.realigned.append(m.script)
        return report
