"""PostgreSQL adapter: ledger table, advisory lock, exactly-once apply, undo, baseline, repair,
Flyway adoption and schema snapshots.

Two sessions per adapter, opened lazily from the connection info it was given:

* the *lock* session holds a session-level advisory lock for the whole run and does nothing else,
  so a ``CREATE INDEX CONCURRENTLY`` on the *apply* session never waits for a transaction of our
  own (Flyway's deadlock with its transactional lock);
* the *apply* session runs the migrations and writes the ledger.

A file whose statements can all run in a transaction runs in ONE transaction together with its
ledger row: it is applied and recorded exactly once, or not at all. Otherwise (``CONCURRENTLY``,
``VACUUM`` … found by pglast, or the header ``-- polymigrate: transactional=false``) a ``started``
row is written first and each statement commits with its progress, so a retry resumes after the
last finished statement and first repairs what a killed statement left (an INVALID index).
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from polymigrate.adapters.base import Adapter, Applied, Capabilities, RepairReport
from polymigrate.adapters.pg_errors import classify
from polymigrate.adapters.pg_ledger import ELAPSED, LedgerTable, parse_ledger_name, row_values
from polymigrate.adapters.pg_repair import repair_leftover
from polymigrate.adapters.pg_snapshot import snapshot as take_snapshot
from polymigrate.adapters.pg_statements import Statement, check_transaction_control, needs_autocommit, split
from polymigrate.catalog import Migration, applicable
from polymigrate.errors import LockNotAcquired, PermanentError, TransientError
from polymigrate.ledger import LedgerEntry, RunContext, Status
from polymigrate.reconcile import State, reconcile
from polymigrate.versions import Version

log = logging.getLogger(__name__)

# Lets the server abort a statement soon after our process dies (PostgreSQL >= 14), so a killed
# CREATE INDEX CONCURRENTLY leaves an INVALID index to repair instead of a build still running.
_CLIENT_CHECK = "1s"


def _lock_key(text: str) -> int:
    """A stable signed 64-bit advisory lock key."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


class PostgresAdapter(Adapter):
    """Adapter for one PostgreSQL database (and one domain in it).

    ``client`` is psycopg connection info: a URL/DSN string or a dict of ``psycopg.connect``
    keyword arguments (host, port, user, password, dbname, sslmode, …). ``settings`` is the
    domain's ``TechnologyConfig``: ``schema`` is where the migrations run (created if absent, set as
    search_path while a file runs), ``ledger`` overrides the ledger table (``table`` or
    ``schema.table``; default ``polymigrate.schema_history``).
    """

    technology = "postgresql"
    capabilities = Capabilities(transactional=True, reversible=True, resumable=True)

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
        self._lock_conn: psycopg.Connection | None = None
        self._locked = False  # inside lock(): apply checks the lock's session is still alive
        self._ledger_ready = False
        self._schema_ready = False

    @classmethod
    def from_url(cls, url: str, *, domain: str, settings: Any = None) -> "PostgresAdapter":
        """From ``postgresql://…`` (also ``postgres://`` and SQLAlchemy's ``postgresql+driver://``)."""
        scheme, sep, rest = url.partition("://")
        if sep and "+" in scheme:
            url = scheme.split("+")[0] + "://" + rest
        return cls(url, domain=domain, settings=settings)

    # -- connections -------------------------------------------------------------------------

    @property
    def target(self) -> str:
        """``postgresql://user@host:port/dbname``: never the password, whatever form the client had."""
        try:
            k = {**conninfo_to_dict(self._conninfo), **self._kwargs}
        except psycopg.ProgrammingError:
            return "postgresql://(invalid connection string)"
        user = f"{k['user']}@" if k.get("user") else ""
        return f"postgresql://{user}{k.get('host', '')}{':' + str(k['port']) if k.get('port') else ''}/{k.get('dbname', '')}"

    def _open(self, purpose: str) -> psycopg.Connection:
        try:
            given = {**conninfo_to_dict(self._conninfo), **self._kwargs}
        except psycopg.ProgrammingError as exc:
            raise PermanentError(f"invalid PostgreSQL connection string: {exc}",
                                 hint="use postgresql://user@host:port/dbname") from None
        kwargs = {"connect_timeout": 10, **given, "autocommit": True,
                  "application_name": f"polymigrate {purpose} {self.domain}"[:63]}
        try:
            conn = psycopg.connect(**kwargs)
            # No server-side prepared statements: psycopg forgets them (DEALLOCATE ALL) when it sees a
            # DROP or ROLLBACK result, and in pipeline mode that can land between a Parse and its
            # Execute queued for the next file ("prepared statement _pg3_N does not exist").
            conn.prepare_threshold = None
        except psycopg.OperationalError as exc:
            raise TransientError(f"cannot connect to {self.target}: {str(exc).strip()}",
                                 hint="check the server is up and the connection settings") from exc
        if conn.info.server_version >= 140000:
            try:
                conn.execute("SELECT set_config('client_connection_check_interval', %s, false)", (_CLIENT_CHECK,))
            except psycopg.Error:
                pass  # not allowed for this role: a killed run may then need lock_timeout to pass
        return conn

    @property
    def conn(self) -> psycopg.Connection:
        """The apply session, reopened when a previous error closed it."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._open("apply")
            self._schema_ready = False
        return self._conn

    @property
    def server_version(self) -> int:
        return self.conn.info.server_version

    def close(self) -> None:
        for c in (self._conn, self._lock_conn):
            if c is not None and not c.closed:
                c.close()
        self._conn = self._lock_conn = None

    # -- ledger ------------------------------------------------------------------------------

    def _ensure_ledger(self) -> psycopg.Connection:
        conn = self.conn
        if not self._ledger_ready:
            try:
                if not self.ledger.exists(conn):
                    self.ledger.create(conn, _lock_key(f"polymigrate:create:{self.ledger.qualified}"))
            except psycopg.Error as exc:
                raise classify(exc, file=self.ledger.qualified, what="cannot create the ledger table") from exc
            self._ledger_ready = True
        return conn

    def read_ledger(self) -> list[LedgerEntry]:
        conn = self._ensure_ledger()
        try:
            return self.ledger.select(conn, self.domain)
        except psycopg.Error as exc:
            raise classify(exc, file=self.ledger.qualified, what="cannot read the ledger") from exc

    def _row(self, migration: Migration, ctx: RunContext, status: Status, **kw) -> dict[str, Any]:
        return {**row_values(migration, ctx, status=status, plan_hash=ctx.plan_hash, **kw),
                "domain": self.domain}

    # -- lock --------------------------------------------------------------------------------

    @contextmanager
    def lock(self, owner: str, wait_seconds: float) -> Iterator[None]:
        """Hold the target's migration lock; ``LockNotAcquired`` names the holder after ``wait_seconds``."""
        self._ensure_ledger()
        if self._lock_conn is None or self._lock_conn.closed or self._lock_conn.broken:
            self._lock_conn = self._open("lock")
        lc = self._lock_conn
        lc.execute("SELECT set_config('application_name', %s, false)", (f"polymigrate lock: {owner}"[:63],))
        deadline = time.monotonic() + max(wait_seconds, 0)
        delay, announced = 0.05, False
        while not lc.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()[0]:
            holder = self.lock_holder()
            if time.monotonic() >= deadline:
                raise LockNotAcquired(
                    f"the migration lock of {self.domain} on {self.target} is held by {holder}; "
                    f"gave up after waiting {wait_seconds:g}s", holder=holder, file=self.ledger.qualified,
                    hint="wait for that run to finish (or stop it), then retry; raise lock_wait_seconds to wait longer")
            if not announced:
                log.info("waiting up to %gs for the migration lock held by %s", wait_seconds, holder)
                announced = True
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.01)))
            delay = min(delay * 2, 0.5)
        try:
            lc.execute(sql.SQL("INSERT INTO {} (lock_key, owner, pid) VALUES (%s, %s, pg_backend_pid()) "
                               "ON CONFLICT (lock_key) DO UPDATE SET owner = EXCLUDED.owner, pid = EXCLUDED.pid, "
                               "since = now()").format(self.ledger.lock_ident), (self._key, owner))
            self._locked = True
            yield
        finally:
            self._locked = False
            try:
                lc.execute(sql.SQL("DELETE FROM {} WHERE lock_key = %s AND pid = pg_backend_pid()").format(
                    self.ledger.lock_ident), (self._key,))
                lc.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            except psycopg.Error:
                lc.close()  # the session is gone, and so is its lock

    def _assert_lock(self) -> None:
        """Refuse to go on when the lock's session has ended.

        The advisory lock lives exactly as long as its session, and that session sits idle while files
        are applied on the other one: ``idle_session_timeout``, a proxy dropping idle connections or
        ``pg_terminate_backend`` end it silently, and another run may then take the lock and apply the
        same pending files. Checked before every file, at one round trip each.
        """
        if not self._locked:
            return
        lc = self._lock_conn
        try:
            if lc is None or lc.closed or lc.broken:
                raise psycopg.OperationalError("the lock session is closed")
            lc.execute("SELECT 1")
        except psycopg.Error as exc:
            self._locked = False
            raise TransientError(f"lost the migration lock of {self.domain} on {self.target}: its session ended "
                                 f"({str(exc).strip()}); nothing more was applied",
                                 hint="retry: the run re-reads the ledger under a new lock and resumes") from exc

    def lock_holder(self) -> str:
        """Who holds this target's lock now: owner, pid and since when (``nobody`` if free)."""
        lc = self._lock_conn or self.conn
        row = lc.execute(sql.SQL(
            "SELECT coalesce(o.owner, a.application_name), l.pid, coalesce(o.since, a.backend_start) "
            "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
            "LEFT JOIN {} o ON o.lock_key = %(key)s AND o.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND l.classid::bigint = %(hi)s AND l.objid::bigint = %(lo)s").format(self.ledger.lock_ident),
            {"key": self._key, "hi": (self._key >> 32) & 0xFFFFFFFF, "lo": self._key & 0xFFFFFFFF}).fetchone()
        if row is None:
            return "nobody"
        owner, pid, since = row
        return f"{owner or 'unknown'} (pid {pid}, since {since:%Y-%m-%d %H:%M:%S %Z})".strip()

    # -- running SQL -------------------------------------------------------------------------

    def _settings_for(self, migration: Migration, ctx: RunContext) -> dict[str, str]:
        d = migration.directives
        values = {"lock_timeout": d.lock_timeout or ctx.lock_timeout,
                  "statement_timeout": d.statement_timeout or ctx.statement_timeout}
        out = {k: v.replace(" ", "") for k, v in values.items() if v}
        if self.schema:
            conn = self.conn
            if not self._schema_ready:
                exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                self._schema_ready = True
            out["search_path"] = sql.Identifier(self.schema).as_string(conn)
        return out

    @staticmethod
    def _set(conn: psycopg.Connection, settings: dict[str, str], *, local: bool) -> None:
        if settings:
            conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
                sql.SQL("set_config({}, {}, {})").format(sql.Literal(k), sql.Placeholder(), sql.Literal(local))
                for k in settings)), list(settings.values()))

    def _statements(self, migration: Migration, body: str) -> list[Statement]:
        statements = split(body, file=migration.path, server_version=self.server_version)
        check_transaction_control(statements, migration.path)
        return statements

    def _run_transactional(self, migration: Migration, statements: list[Statement], settings: dict[str, str],
                           record: Callable[[psycopg.Connection], None]) -> int:
        """All statements and ``record(conn)`` in one transaction; returns the elapsed ms.

        Pipelined: the whole file, its ledger row and the commit go to the server without waiting
        for each result (one round trip instead of one per statement), which is what brings a run
        of many small files near ``psql -1``. The server still stops at the first error and rolls
        everything back; the first statement without a result is the one that failed.
        """
        conn = self.conn
        started = time.monotonic()
        cursors: list[psycopg.Cursor] = []
        try:
            with conn.pipeline(), conn.transaction():
                self._set(conn, settings, local=True)
                for s in statements:
                    cursors.append(conn.execute(s.text))
                record(conn)
        except psycopg.Error as exc:
            failed = next((s for s, c in zip(statements, cursors) if c.pgresult is None), None)
            raise classify(exc, file=str(migration.path), statement=failed,
                           what=None if failed else "the commit failed (a deferred constraint, or the ledger row)") from exc
        return int((time.monotonic() - started) * 1000)

    def _run_autocommit(self, migration: Migration, statements: list[Statement], settings: dict[str, str],
                        start_at: int, progress: Callable[[psycopg.Connection, int], None] | None,
                        resuming: bool = False) -> None:
        """Each statement on its own: transaction-safe ones in a transaction with ``progress``, the
        others in autocommit followed by ``progress``. When ``resuming``, first repairs what an
        interrupted run of statement ``start_at`` left behind."""
        conn = self.conn
        n = len(statements)
        current: Statement | None = None
        try:
            self._set(conn, settings, local=False)
            for current in statements[start_at:]:
                if current.non_transactional:
                    done_already = resuming and current.index == start_at and repair_leftover(conn, current)
                    if not done_already:
                        conn.execute(current.text)
                    if progress:
                        progress(conn, current.index + 1)
                else:
                    with conn.transaction():
                        conn.execute(current.text)
                        if progress:
                            progress(conn, current.index + 1)
        except psycopg.Error as exc:
            i = current.index if current else start_at
            raise classify(exc, file=str(migration.path), statement=current,
                           what=f"statement {i + 1} of {n} failed ({i} done and committed; "
                                f"a retry resumes at statement {i + 1})") from exc
        finally:
            if settings and not conn.broken and not conn.closed:
                try:
                    conn.execute(sql.SQL("; ").join(sql.SQL("RESET {}").format(sql.Identifier(k)) for k in settings))
                except psycopg.Error:
                    pass

    # -- the protocol ------------------------------------------------------------------------

    def apply(self, migration: Migration, body: str, ctx: RunContext, resume: LedgerEntry | None = None) -> Applied:
        """Run one versioned or repeatable file and record it (see the module docstring)."""
        self._assert_lock()
        self._ensure_ledger()
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
            return Applied(ms, len(statements), {"transactional": True})
        return self._apply_resumable(migration, statements, settings, ctx, resume)

    def _apply_resumable(self, migration: Migration, statements: list[Statement], settings: dict[str, str],
                         ctx: RunContext, resume: LedgerEntry | None) -> Applied:
        conn = self.conn
        n = len(statements)
        reasons = sorted({s.non_transactional for s in statements if s.non_transactional})
        base = {"statements": n, "reasons": reasons}
        done = int(resume.progress.get("statements_done", 0)) if resume else 0
        spent = resume.execution_time if resume else 0
        started = time.monotonic()
        try:
            if resume is not None:
                rank = resume.installed_rank
                self.ledger.update(conn, self.domain, rank, {"status": Status.STARTED, "run_id": ctx.run_id,
                                                             "installed_by": ctx.actor or "unknown"})
            else:
                rank = self.ledger.insert(conn, self._row(migration, ctx, Status.STARTED,
                                                          progress={**base, "statements_done": 0}))
                assert rank is not None
        except psycopg.Error as exc:
            raise classify(exc, file=str(migration.path), what="writing the 'started' ledger row failed") from exc

        def progress(c: psycopg.Connection, k: int) -> None:
            self.ledger.update(c, self.domain, rank, {"progress": {**base, "statements_done": k}})

        try:
            self._run_autocommit(migration, statements, settings, done, progress, resuming=resume is not None)
        except (PermanentError, TransientError):
            # on a fresh session if the error broke this one; a retry resumes from the progress mark
            self._mark(rank, {"status": Status.FAILED, "success": False,
                              "execution_time": spent + int((time.monotonic() - started) * 1000)})
            raise
        ms = spent + int((time.monotonic() - started) * 1000)
        self._mark(rank, {"status": Status.SUCCESS, "success": True, "execution_time": ms,
                          "progress": {**base, "statements_done": n}})
        return Applied(ms, n - done, {"transactional": False, "resumed_at": done + 1 if resume else None,
                                      "reasons": reasons})

    def _mark(self, rank: int, values: dict[str, Any]) -> None:
        try:
            self.ledger.update(self.conn, self.domain, rank, values)
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

        def record(conn: psycopg.Connection, elapsed: Any = ELAPSED) -> None:
            self.ledger.update(conn, self.domain, target.installed_rank, {"status": Status.UNDONE})
            self.ledger.insert(conn, self._row(undo_migration, ctx, Status.SUCCESS, execution_time=elapsed), rank=False)

        if not needs_autocommit(statements, undo_migration.directives.transactional):
            ms = self._run_transactional(undo_migration, statements, settings, record)
        else:
            started = time.monotonic()
            self._run_autocommit(undo_migration, statements, settings, 0, None)
            ms = int((time.monotonic() - started) * 1000)
            with self.conn.transaction():
                record(self.conn, ms)
        return Applied(ms, len(statements), {"undone": version})

    def baseline(self, version: str, description: str, ctx: RunContext) -> None:
        """Mark everything up to ``version`` as applied without running it (an empty ledger only)."""
        live = [e for e in self.read_ledger() if e.status is not Status.DELETED]
        if any(e.status is Status.BASELINE and e.version == version for e in live):
            return
        if live:
            raise PermanentError(f"cannot baseline {self.domain} at {version}: the ledger already has "
                                 f"{len(live)} row(s) (latest {live[-1].script})", file=self.ledger.qualified,
                                 hint="baseline only a target polymigrate has never migrated; use repair otherwise")
        row = {"version": version, "description": description or "<< Baseline >>", "type": "BASELINE",
               "script": description or "<< Baseline >>", "checksum": None, "installed_by": ctx.actor or "unknown",
               "execution_time": 0, "success": True, "status": Status.BASELINE, "domain": self.domain,
               "run_id": ctx.run_id, "environment": ctx.environment, "region": ctx.region, "progress": {}}
        with self.conn.transaction():
            self.ledger.insert(self.conn, row)

    def repair(self, migrations: list[Migration], ctx: RunContext) -> RepairReport:
        """Realign checksums of changed files; mark rows whose file is gone deleted.

        A half-done non-transactional file (started/failed) keeps its row and its progress: only its
        checksum is realigned, so the next run resumes after the statements that already committed.
        Deleting that row (Flyway's repair does) would make the next run execute them a second time.
        """
        report = RepairReport([], [])
        infos = reconcile(applicable(migrations), self.read_ledger(), out_of_order=True)
        conn = self.conn
        with conn.transaction():
            for i in infos:
                e = i.entry
                if e is None:
                    continue
                if i.state is State.MISSING:
                    self.ledger.update(conn, self.domain, e.installed_rank, {"status": Status.DELETED, "success": False})
                    report.removed.append(e.script)
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
        from polymigrate.adapters.pg_flyway import import_history
        return import_history(self, ctx, schema=schema, table=table)

    def snapshot(self) -> dict[str, Any]:
        conn = self._ensure_ledger()
        schema = self.schema or conn.execute("SELECT current_schema()").fetchone()[0]
        skip = [self.ledger.table, self.ledger.table + "_lock"] if schema == self.ledger.schema else []
        return take_snapshot(conn, schema, skip)
