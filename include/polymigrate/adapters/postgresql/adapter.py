"""PostgreSQL adapter: ledger table, advisory lock, exactly-once apply, undo, baseline, repair,
Flyway adoption and schema snapshots.

One session per adapter, opened lazily from the connection info it was given. It takes the
target's session-level advisory lock, then runs the migrations and writes the ledger, so the lock
and the work live and die together: a session cut by ``pg_terminate_backend``,
``idle_session_timeout`` or a proxy takes its open transaction with it, and nothing of the file
commits after another run may have taken the lock. Every transaction that writes the ledger also
proves the lock at commit time (``pg_try_advisory_xact_lock`` of the same key, which only the
holder's session is granted), and the ledger itself refuses a second ``success`` for one version.
The lock is never held inside a transaction, so a ``CREATE INDEX CONCURRENTLY`` never waits for a
transaction of our own (Flyway's deadlock with its transactional lock).

A file whose statements can all run in a transaction runs in ONE transaction together with its
ledger row: it is applied and recorded exactly once, or not at all. Otherwise (``CONCURRENTLY``,
``VACUUM``, a ``DO`` block that commits … found by pglast, the file's own ``COMMIT``, or the header
``-- polymigrate: transactional=false``) a ``started`` row is written first and each step (a
statement, or a transaction the file delimits) commits with its progress, so a retry resumes after
the last committed step and first repairs what a killed statement left (an INVALID index).

After every file that can change its session (``statements.may_change_session``: conservative) the
session is reset (role, search_path and every other setting, temporary tables, cursors, prepared
statements, LISTEN), as Flyway restores role and search_path: what a file changes in its session
never reaches the next file, so the result never depends on how files were batched into runs.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg

from polymigrate.adapters.base import Adapter, AdoptReport, Applied, Capabilities, RepairReport
from polymigrate.adapters.postgresql import backfill as pg_backfill
from polymigrate.adapters.postgresql.checks import PostgresChecks
from polymigrate.adapters.postgresql.errors import classify
from polymigrate.adapters.postgresql.ledger import ELAPSED, LedgerTable, parse_ledger_name, row_values
from polymigrate.adapters.postgresql.lock import PostgresLock, _lock_key
from polymigrate.adapters.postgresql.session import PostgresSession
from polymigrate.adapters.postgresql.statements import Statement, needs_autocommit
from polymigrate.adapters.postgresql.steps import PostgresSteps
from polymigrate.catalog import Kind, Migration, applicable
from polymigrate.errors import PermanentError, TransientError
from polymigrate.lineage import postgresql_changes
from polymigrate.ledger import LedgerEntry, RunContext, Status
from polymigrate.reconcile import State, reconcile
from polymigrate.recovery import UNDO
from polymigrate.versions import Version

log = logging.getLogger(__name__)


def _changed(statements: list[Statement]) -> list | None:
    """What the file changed, for lineage and the audit page, from the parse that split it (None: the
    executor reads the file itself; lineage never fails a file that was applied)."""
    try:
        return postgresql_changes((s.node, s.fields) for s in statements)
    except Exception:  # noqa: BLE001
        return None


class PostgresAdapter(PostgresSession, PostgresLock, PostgresSteps, PostgresChecks, Adapter):
    """Adapter for one PostgreSQL database (and one domain in it).

    ``client`` is psycopg connection info: a URL/DSN string or a dict of ``psycopg.connect``
    keyword arguments (host, port, user, password, dbname, sslmode, …). ``settings`` is the
    domain's ``TechnologyConfig``: ``schema`` is where the migrations run (created if absent, set as
    search_path while a file runs), ``ledger`` overrides the ledger table (``table`` or
    ``schema.table``; default ``polymigrate.schema_history``).
    """

    technology = "postgresql"
    capabilities = Capabilities(transactional=True, reversible=True, resumable=True, adopts="flyway")

    def __init__(self, client: str | dict[str, Any], *, domain: str, settings: Any = None):
        super().__init__(client, domain=domain, settings=settings)
        if isinstance(client, str):
            self._conninfo, self._kwargs = client, {}
        elif isinstance(client, dict):
            self._conninfo, self._kwargs = "", dict(client)
        else:
            raise TypeError("PostgresAdapter needs a connection URL or a dict of psycopg.connect arguments")
        self.ledger = LedgerTable(*parse_ledger_name(getattr(settings, "ledger", None)))
        self.schema: str | None = getattr(settings, "schema_", None)
        self._key = _lock_key(f"polymigrate:{self.ledger.qualified}:{domain}")
        self._conn: psycopg.Connection | None = None
        self._locked = False  # inside lock(): the session must not be replaced behind the lock's back
        self._session: dict[str, str] = {}  # our own session settings, set again after each reset
        self._ledger_ready = False
        self._schema_ready = False
        self._queries: dict[tuple, bytes] = {}  # composed once per run, not once per file (issue 24)
        self._upcoming: dict[str, tuple[Migration, str] | None] = {}  # each file of the run → the next (preflight)
        self._parsed: tuple[str, str, list[Statement]] | None = None  # the next file, parsed ahead

    @classmethod
    def from_url(cls, url: str, *, domain: str, settings: Any = None) -> "PostgresAdapter":
        """From ``postgresql://…`` (also ``postgres://`` and SQLAlchemy's ``postgresql+driver://``)."""
        scheme, sep, rest = url.partition("://")
        if sep and "+" in scheme:
            url = scheme.split("+")[0] + "://" + rest
        return cls(url, domain=domain, settings=settings)

    # -- connections -------------------------------------------------------------------------

    # -- ledger ------------------------------------------------------------------------------

    def _ensure_ledger(self, *, tolerate_duplicates: bool = False) -> psycopg.Connection:
        """Create the ledger (or add what an earlier version did not create). A ledger recording one
        version as applied twice is refused, naming the rows, unless ``tolerate_duplicates`` (repair)."""
        conn = self.conn
        if self._ledger_ready:
            return conn
        tables = False
        try:
            tables, index = self.ledger.exists(conn)
            if not (tables and index):
                self.ledger.create(conn, _lock_key(f"polymigrate:create:{self.ledger.qualified}"), tables=not tables)
        except psycopg.errors.UniqueViolation:
            dups = self.ledger.duplicate_successes(conn)
            if tolerate_duplicates:
                return conn
            listing = "; ".join(f"version {v} of {d} (ranks {', '.join(map(str, r))})" for d, v, r in dups)
            raise PermanentError(
                f"the ledger {self.ledger.qualified} records a migration as applied more than once: {listing}. "
                "An earlier run lost its migration lock and applied it a second time", file=self.ledger.qualified,
                hint="check what the second run did to the data, then run `polymigrate repair` (it keeps the first "
                     "row and marks the others deleted); the ledger then refuses a second success") from None
        except psycopg.errors.InsufficientPrivilege as exc:
            if not tables:
                raise classify(exc, file=self.ledger.qualified, what="cannot create the ledger table") from exc
            log.warning("cannot add the one-success-per-version index to %s (%s): ask its owner to run "
                        "polymigrate once; the migration lock still fences every commit", self.ledger.qualified,
                        str(exc).strip())
        except psycopg.Error as exc:
            raise classify(exc, file=self.ledger.qualified, what="cannot create the ledger table") from exc
        self._ledger_ready = True
        return conn

    def read_ledger(self) -> list[LedgerEntry]:
        return self._entries()

    def _entries(self, *, tolerate_duplicates: bool = False) -> list[LedgerEntry]:
        conn = self._ensure_ledger(tolerate_duplicates=tolerate_duplicates)
        try:
            return self.ledger.select(conn, self.domain)
        except psycopg.Error as exc:
            raise self._error(exc, file=self.ledger.qualified, what="cannot read the ledger") from exc

    def _row(self, migration: Migration, ctx: RunContext, status: Status, **kw) -> dict[str, Any]:
        return {**row_values(migration, ctx, status=status, plan_hash=ctx.plan_hash, **kw),
                "domain": self.domain}

    # -- lock --------------------------------------------------------------------------------

    # -- running SQL -------------------------------------------------------------------------

    # -- the protocol ------------------------------------------------------------------------

    def apply(self, migration: Migration, body: str, ctx: RunContext, resume: LedgerEntry | None = None) -> Applied:
        """Run one versioned or repeatable file and record it (see the module docstring)."""
        self._ensure_ledger()
        if migration.directives.backfill:
            return self._apply_backfill(migration, body, ctx, resume)
        statements = self._statements(migration, body)
        settings = self._settings_for(migration, ctx)
        if not needs_autocommit(statements, migration.directives.transactional):
            def record(conn: psycopg.Connection) -> None:
                row = self._row(migration, ctx, Status.SUCCESS, execution_time=ELAPSED,
                                progress={"statements_done": len(statements)})
                if resume is not None:
                    self.ledger.update(conn, self.domain, resume.installed_rank, row)
                else:
                    self.ledger.insert(conn, row, rank=False)
            ms = self._run_transactional(migration, statements, settings, record)
            return Applied(ms, len(statements), {"transactional": True}, changed=_changed(statements))
        applied = self._apply_resumable(migration, statements, settings, ctx, resume)
        applied.changed = _changed(statements)
        return applied

    def _apply_resumable(self, migration: Migration, statements: list[Statement], settings: dict[str, str],
                         ctx: RunContext, resume: LedgerEntry | None) -> Applied:
        n = len(statements)
        reasons = sorted({s.non_transactional for s in statements if s.non_transactional})
        if any(s.transaction_control for s in statements):
            reasons.append("the file's own BEGIN/COMMIT")
        base = {"statements": n, "reasons": reasons}
        done = int(resume.progress.get("statements_done", 0)) if resume else 0
        spent = resume.execution_time if resume else 0
        started = time.monotonic()
        version = str(migration.version) if migration.version is not None else None
        rank = self._start_row(migration, ctx, resume, {**base, "statements_done": 0}, version)

        def progress(c: psycopg.Connection, k: int) -> None:
            self.ledger.update(c, self.domain, rank, {"progress": {**base, "statements_done": k}})

        try:
            self._run_steps(migration, statements, settings, done, progress, resuming=resume is not None)
        except (PermanentError, TransientError):
            # on a fresh session if the error broke this one; a retry resumes from the progress mark
            self._mark(rank, {"status": Status.FAILED, "success": False,
                              "execution_time": spent + int((time.monotonic() - started) * 1000)})
            raise
        ms = spent + int((time.monotonic() - started) * 1000)
        # every step is committed with its progress: a retry finds statements_done = n and only records success
        self._finish_row(rank, migration, version, ms, {**base, "statements_done": n}, "step")
        return Applied(ms, n - done, {"transactional": False, "resumed_at": done + 1 if resume else None,
                                      "reasons": reasons})

    def _apply_backfill(self, migration: Migration, body: str, ctx: RunContext, resume: LedgerEntry | None) -> Applied:
        """A backfill file (``backfill``): ``started`` row, keyset batches each committed with its
        checkpoint in that row, ``success`` at the end; a retry resumes after the last committed batch."""
        spec = pg_backfill.parse(body, migration.path)
        opts = pg_backfill.Settings.of(migration)
        conn = self.conn
        version = str(migration.version) if migration.version is not None else None
        state = pg_backfill.state_of(resume.progress if resume else None)
        spent = resume.execution_time if resume else 0
        started = time.monotonic()
        base = {"statements": 1, "statements_done": 0}
        rank = self._start_row(migration, ctx, resume, {**base, "backfill": state}, version)

        def checkpoint(c: psycopg.Connection, st: dict) -> None:
            self.ledger.update(c, self.domain, rank, {"progress": {**base, "backfill": st}})

        session = {k: v for k, v in self._settings_for(migration, ctx).items() if k == "search_path"}
        job = pg_backfill.Backfill(conn, migration, spec, opts, fence=self._fence, checkpoint=checkpoint, state=state)
        try:
            try:
                self._set(conn, session, local=False)
                key = job.resolve_key(migration.directives.key or state.get("key"))
                outcome = job.run(key)
            except psycopg.Error as exc:
                raise self._error(exc, file=str(migration.path), what=f"backfill of {spec.display} failed (every "
                                  "batch before it is committed with its checkpoint; a retry resumes after it)",
                                  version=version) from exc
            finally:
                self._reset_quietly(conn)
        except (PermanentError, TransientError):
            self._mark(rank, {"status": Status.FAILED, "success": False,
                              "execution_time": spent + int((time.monotonic() - started) * 1000)})
            raise
        ms = spent + int((time.monotonic() - started) * 1000)
        self._finish_row(rank, migration, version, ms, {**base, "statements_done": 1, "backfill": job.state}, "batch")
        return Applied(ms, 1, {"transactional": False, "backfill": {
            "table": spec.display, "key": key, "rows_scanned": outcome.scanned, "rows_changed": outcome.updated,
            "batches": outcome.batches, "resumed_after": outcome.resumed_after, "retried_batches": outcome.retries,
            "paused_s": round(outcome.paused_s, 1)}})

    def _mark(self, rank: int, values: dict[str, Any]) -> None:
        """Best effort after a failure: the row stays ``started`` otherwise, which resumes the same way."""
        try:
            conn = self.conn
            with conn.transaction():
                self._fence(conn)
                self.ledger.update(conn, self.domain, rank, values)
        except (psycopg.Error, TransientError) as exc:
            log.warning("could not update ledger row %s: %s", rank, exc)

    def undo(self, undo_migration: Migration, body: str, ctx: RunContext) -> Applied:
        """Run a ``U`` file and mark its version undone (pending again), with an ``UNDO_SQL`` record row."""
        entries = self.read_ledger()
        version = str(undo_migration.version)
        applied = [e for e in entries if e.version is not None and Version(e.version) == undo_migration.version
                   and not e.type.startswith("UNDO") and e.status is not Status.DELETED]
        if not applied or applied[-1].status is not Status.SUCCESS:
            state = applied[-1].status.value if applied else "not applied"
            raise PermanentError(f"cannot undo version {version}: it is {state}", file=undo_migration.path,
                                 hint="only a successfully applied version can be undone")
        target = applied[-1]
        statements = self._statements(undo_migration, body)
        settings = self._settings_for(undo_migration, ctx)
        kept = {k: v for k, v in (target.progress or {}).items() if k != UNDO}

        def record(conn: psycopg.Connection, elapsed: Any = ELAPSED) -> None:
            self.ledger.update(conn, self.domain, target.installed_rank, {"status": Status.UNDONE, "progress": kept})
            self.ledger.insert(conn, self._row(undo_migration, ctx, Status.SUCCESS, execution_time=elapsed), rank=False)

        if not needs_autocommit(statements, undo_migration.directives.transactional):
            ms = self._run_transactional(undo_migration, statements, settings, record)
            return Applied(ms, len(statements), {"undone": version})
        started = time.monotonic()
        done = self._undo_steps(undo_migration, statements, settings, target, kept)
        ms = int((time.monotonic() - started) * 1000)
        try:
            with self.conn.transaction():
                self._fence(self.conn)
                record(self.conn, ms)
        except psycopg.Error as exc:
            raise self._error(exc, file=str(undo_migration.path), what="recording the undo failed") from exc
        return Applied(ms, len(statements) - done, {"undone": version, "resumed_at": done + 1 if done else None})

    def _undo_steps(self, u: Migration, statements: list[Statement], settings: dict[str, str], target: LedgerEntry,
                    kept: dict) -> int:
        """A ``U`` file outside one transaction, step by step, each step's progress committed in the
        undone version's row (``progress.undo``), so ``status`` shows it half undone and the same undo,
        run again, resumes after what committed (issue 28). The statements it skipped."""
        version = str(u.version)
        state = (target.progress or {}).get(UNDO) or {}
        done = int(state.get("statements_done", 0))
        if state.get("checksum") != u.checksum:
            if done:
                raise PermanentError(
                    f"the undo of version {version} stopped half way ({done} statement(s) of {state.get('script')} "
                    f"committed) and {u.script} has changed since", file=u.path,
                    hint=f"restore the undo file as it ran (the undo resumes at statement {done + 1}); or, if the "
                         f"edit touches only statements after {done}, `polymigrate repair` to accept it, then undo again")
            done = 0  # nothing of the old text committed: the new text runs from its start
        base = {"script": u.script, "checksum": u.checksum, "statements": len(statements)}

        def mark(conn: psycopg.Connection, k: int) -> None:
            self.ledger.update(conn, self.domain, target.installed_rank,
                               {"progress": {**kept, UNDO: {**base, "statements_done": k}}})

        try:
            with self.conn.transaction():  # before the first statement: half undone from here on
                self._fence(self.conn)
                mark(self.conn, done)
        except psycopg.Error as exc:
            raise self._error(exc, file=str(u.path), what="recording the undo's start failed") from exc
        try:
            self._run_steps(u, statements, settings, done, mark, resuming=bool(state))
        except PermanentError as exc:
            # not "run migrate again": that would apply over a half-undone version
            exc.hint = ("fix what stopped it, then run the same `polymigrate undo --to …` again: it resumes after "
                        "the statements already committed (if you fix the undo file itself, `polymigrate repair` "
                        "first); until then the version is half undone and migrate is refused")
            raise
        return done

    def baseline(self, version: str, description: str, ctx: RunContext) -> None:
        """Mark everything up to ``version`` as applied without running it (an empty ledger only)."""
        if not self._baseline_wanted(version, self.ledger.qualified):
            return
        row = {"version": version, "description": description or "<< Baseline >>", "type": "BASELINE",
               "script": description or "<< Baseline >>", "checksum": None, "installed_by": ctx.actor or "unknown",
               "execution_time": 0, "success": True, "status": Status.BASELINE, "domain": self.domain,
               "run_id": ctx.run_id, "environment": ctx.environment, "region": ctx.region, "progress": {}}
        with self.conn.transaction():
            self._fence(self.conn)
            self.ledger.insert(self.conn, row)

    def repair(self, migrations: list[Migration], ctx: RunContext) -> RepairReport:
        """Realign checksums of changed files; mark rows whose file is gone deleted.

        A half-done non-transactional file (started/failed) keeps its row and its progress: only its
        checksum is realigned, so the next run resumes after the statements that already committed.
        Deleting that row (Flyway's repair does) would make the next run execute them a second time.
        """
        report = RepairReport([], [])
        entries = self._entries(tolerate_duplicates=True)
        conn = self.conn
        with conn.transaction():
            self._fence(conn)
            # a version recorded as applied twice (a lost lock, before the ledger refused it): keep the first
            by_rank = {e.installed_rank: e for e in entries}
            for domain, version, ranks in self.ledger.duplicate_successes(conn):
                if domain != self.domain:
                    continue
                for rank in ranks[1:]:
                    self.ledger.update(conn, self.domain, rank, {"status": Status.DELETED, "success": False})
                    by_rank[rank].status = Status.DELETED
                    report.removed.append(f"{by_rank[rank].script} (rank {rank}: a second success of version {version})")
        self._ledger_ready = False
        # the one-success index, now that this domain's duplicates no longer stand in its way
        self._ensure_ledger(tolerate_duplicates=True)
        infos = reconcile(applicable(migrations), entries, out_of_order=True)
        undo_files = {m.version: m for m in migrations if m.kind is Kind.UNDO}
        with conn.transaction():
            self._fence(conn)
            for i in infos:
                e = i.entry
                if e is None:
                    continue
                if i.state is State.MISSING:
                    # As Flyway's repair does: the applied row stays applied (success) and a DELETE row
                    # follows it. Flyway reads success=false as a failed migration and refuses to go on.
                    self.ledger.update(conn, self.domain, e.installed_rank, {"status": Status.DELETED})
                    self.ledger.insert(conn, {
                        "version": e.version, "description": e.description, "type": "DELETE", "script": e.script,
                        "checksum": e.checksum, "installed_by": ctx.actor or "unknown", "execution_time": 0,
                        "success": True, "status": Status.DELETED, "domain": self.domain, "run_id": ctx.run_id,
                        "environment": ctx.environment, "region": ctx.region, "progress": {}})
                    report.removed.append(e.script)
                elif i.state is State.HALF_UNDONE:
                    # the undo resumes after what committed, with the fixed undo file (as for a half-done file)
                    u = undo_files.get(Version(e.version)) if e.version else None
                    state = e.progress.get(UNDO) or {}
                    if u is not None and state.get("checksum") not in (None, u.checksum):
                        self.ledger.update(conn, self.domain, e.installed_rank, {"progress": {
                            **e.progress, UNDO: {**state, "checksum": u.checksum, "script": u.script}}})
                        report.realigned.append(u.script)
                elif i.state is State.CHANGED and i.migration is not None:
                    m = i.migration
                    self.ledger.update(conn, self.domain, e.installed_rank,
                                       {"checksum": m.checksum, "sha256": m.sha256, "description": m.description,
                                        "script": m.script})
                    report.realigned.append(m.script)
        return report

    def import_flyway(self, ctx: RunContext, *, schema: str = "public", table: str = "flyway_schema_history") -> int:
        """Copy a ``flyway_schema_history`` of this database into the ledger; returns the rows copied.

        Ranks, checksums and timestamps are kept, so nothing re-runs and Flyway's checksums (the
        same CRC32 the catalog computes) validate. Importing twice is a no-op.
        """
        from polymigrate.adapters.postgresql.flyway import import_history
        return import_history(self.conn, self.ledger, self.read_ledger(), self._fence, ctx, target=self.target,
                              domain=self.domain, schema=schema, table=table)

    def adopt(self, ctx: RunContext, migrations: list[Migration], *, source: str | None = None) -> AdoptReport:
        """Flyway's history: ``source`` is ``[schema.]table`` (default ``public.flyway_schema_history``)."""
        schema, _, table = (source or "flyway_schema_history").rpartition(".")
        schema = schema or "public"
        return AdoptReport(f"{schema}.{table}", self.import_flyway(ctx, schema=schema, table=table))


