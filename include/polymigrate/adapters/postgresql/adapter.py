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

import hashlib
import logging
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from polymigrate.adapters.base import Adapter, AdoptReport, Applied, Capabilities, Check, RepairReport
from polymigrate.adapters.postgresql import backfill as pg_backfill
from polymigrate.adapters.postgresql.errors import classify, connect_error
from polymigrate.adapters.postgresql.ledger import ELAPSED, LedgerTable, parse_ledger_name, row_values
from polymigrate.adapters.postgresql.repair import repair_leftover
from polymigrate.adapters.postgresql.snapshot import snapshot as take_snapshot
from polymigrate.adapters.postgresql.statements import (Statement, check_transaction_control, needs_autocommit, split,
                                                        steps)
from polymigrate.catalog import Kind, Migration, applicable
from polymigrate.errors import LockNotAcquired, PermanentError, TransientError
from polymigrate.lineage import postgresql_changes
from polymigrate.ledger import LedgerEntry, RunContext, Status
from polymigrate.reconcile import State, reconcile
from polymigrate.recovery import UNDO
from polymigrate.versions import Version

log = logging.getLogger(__name__)

# Lets the server abort a statement soon after our process dies (PostgreSQL >= 14), so a killed
# CREATE INDEX CONCURRENTLY leaves an INVALID index to repair instead of a build still running.
_CLIENT_CHECK = "1s"
# Raised by the fence below, inside the transaction that would record a file: text the server echoes.
_LOST_MARK = "polymigrate: migration lock not held"
# The lock proven at commit time: the holder's session is granted the key again at once (advisory locks
# are re-entrant per session); any other session is refused while the holder lives. The cast fails only
# when the lock is elsewhere, aborting the transaction with a message we recognise (no function to create).
_FENCE = sql.SQL("CASE WHEN pg_try_advisory_xact_lock({key}) THEN 1 "
                 "ELSE ('polymigrate: migration lock not held (pid ' || pg_backend_pid() || ')')::int END")
# What a file may leave in its session (Flyway restores role and search_path; this restores all of it).
# Every one of these may run inside a transaction, so a transactional file resets before its ledger row.
# RESET ALL leaves the role alone; SET SESSION AUTHORIZATION DEFAULT resets it (any user may run it).
_RESET = ("RESET ALL", "SET SESSION AUTHORIZATION DEFAULT", "CLOSE ALL", "UNLISTEN *",
          "DISCARD TEMP", "DISCARD SEQUENCES", "DEALLOCATE ALL")
# Ledger writes inside a step of a non-transactional file run as the connecting user, whatever role the file set.
_AS_CONNECTED = "SET LOCAL SESSION AUTHORIZATION DEFAULT"
_RESET_BYTES = tuple(x.encode() for x in _RESET)  # bytes: psycopg skips converting them, 500 files a run


def _changed(statements: list[Statement]) -> list | None:
    """What the file changed, for lineage and the audit page, from the parse that split it (None: the
    executor reads the file itself; lineage never fails a file that was applied)."""
    try:
        return postgresql_changes((s.node, s.fields) for s in statements)
    except Exception:  # noqa: BLE001
        return None


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

    @classmethod
    def from_url(cls, url: str, *, domain: str, settings: Any = None) -> "PostgresAdapter":
        """From ``postgresql://…`` (also ``postgres://`` and SQLAlchemy's ``postgresql+driver://``)."""
        scheme, sep, rest = url.partition("://")
        if sep and "+" in scheme:
            url = scheme.split("+")[0] + "://" + rest
        return cls(url, domain=domain, settings=settings)

    # -- connections -------------------------------------------------------------------------

    def _given(self) -> dict[str, Any]:
        return {**conninfo_to_dict(self._conninfo), **self._kwargs}

    @property
    def target(self) -> str:
        """``postgresql://user@host:port/dbname``: never the password, whatever form the client had."""
        try:
            k = self._given()
        except psycopg.ProgrammingError:
            return "postgresql://(invalid connection string)"
        user = f"{k['user']}@" if k.get("user") else ""
        return f"postgresql://{user}{k.get('host', '')}{':' + str(k['port']) if k.get('port') else ''}/{k.get('dbname', '')}"

    def _secrets(self) -> tuple[str, ...]:
        try:
            password = self._given().get("password")
        except psycopg.ProgrammingError:
            return ()
        return (str(password),) if password else ()

    def _open(self, purpose: str) -> psycopg.Connection:
        try:
            given = self._given()
        except psycopg.ProgrammingError as exc:
            raise PermanentError(f"invalid PostgreSQL connection string: {exc}",
                                 hint="use postgresql://user@host:port/dbname") from None
        name = f"polymigrate {purpose} {self.domain}"[:63]
        kwargs = {"connect_timeout": 10, **given, "autocommit": True, "application_name": name}
        try:
            conn = psycopg.connect(**kwargs)
            # No server-side prepared statements: psycopg forgets them (DEALLOCATE ALL) when it sees a
            # DROP or ROLLBACK result, and in pipeline mode that can land between a Parse and its
            # Execute queued for the next file ("prepared statement _pg3_N does not exist").
            conn.prepare_threshold = None
        except psycopg.Error as exc:
            raise connect_error(exc, self.target, self._secrets()) from None
        self._session = {"application_name": name}
        if conn.info.server_version >= 140000:
            try:
                conn.execute("SELECT set_config('client_connection_check_interval', %s, false)", (_CLIENT_CHECK,))
                self._session["client_connection_check_interval"] = _CLIENT_CHECK
            except psycopg.Error:
                pass  # not allowed for this role: a killed run may then need lock_timeout to pass
        return conn

    @property
    def conn(self) -> psycopg.Connection:
        """The session, reopened when a previous error closed it, unless it held the lock: a new session
        does not hold it, and another run may have taken it (and applied files) in between."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._locked:
                raise self._lost_lock("its session ended")
            self._conn = self._open("apply")
            self._schema_ready = False
        return self._conn

    @property
    def server_version(self) -> int:
        return self.conn.info.server_version

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None
        self._locked = False

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

    @contextmanager
    def lock(self, owner: str, wait_seconds: float) -> Iterator[None]:
        """Hold the target's migration lock; ``LockNotAcquired`` names the holder after ``wait_seconds``."""
        self._ensure_ledger(tolerate_duplicates=True)
        lc = self.conn
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
        apply_name = self._session.get("application_name", "")
        try:
            self._session["application_name"] = f"polymigrate lock: {owner}"[:63]
            lc.execute("SELECT set_config('application_name', %s, false)", (self._session["application_name"],))
            lc.execute(sql.SQL("INSERT INTO {} (lock_key, owner, pid) VALUES (%s, %s, pg_backend_pid()) "
                               "ON CONFLICT (lock_key) DO UPDATE SET owner = EXCLUDED.owner, pid = EXCLUDED.pid, "
                               "since = now()").format(self.ledger.lock_ident), (self._key, owner))
            self._locked = True
            yield
        finally:
            self._locked = False
            self._session["application_name"] = apply_name
            if lc is self._conn and not lc.closed and not lc.broken:
                try:
                    lc.execute(sql.SQL("DELETE FROM {} WHERE lock_key = %s AND pid = pg_backend_pid()").format(
                        self.ledger.lock_ident), (self._key,))
                    lc.execute("SELECT pg_advisory_unlock(%s), set_config('application_name', %s, false)",
                               (self._key, apply_name))
                except psycopg.Error:
                    lc.close()  # the session is gone, and so is its lock

    def _lost_lock(self, why: str) -> TransientError:
        # _locked stays set until lock() exits: no new session may write for this run (a 'failed' mark
        # written on a fresh session could overwrite what the run that took the lock recorded)
        return TransientError(f"lost the migration lock of {self.domain} on {self.target}: {why}; nothing more "
                              "was committed by this run, and another run may hold the lock now",
                              hint="retry: the run re-reads the ledger under a new lock and resumes")

    def lock_holder(self) -> str:
        """Who holds this target's lock now: owner, pid and since when (``nobody`` if free)."""
        row = self.conn.execute(sql.SQL(
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

    def _error(self, exc: psycopg.Error, *, file: str, statement: Statement | None = None,
               what: str | None = None, version: str | None = None) -> PermanentError:
        """``classify`` plus what only the adapter knows: a lost lock, a version another run recorded."""
        conn = self._conn
        if _LOST_MARK in str(exc):
            return self._lost_lock("the session that commits no longer holds it")
        if self._locked and conn is not None and (conn.closed or conn.broken):
            return self._lost_lock(f"its session ended ({str(exc).strip()})")
        diag = getattr(exc, "diag", None)
        if getattr(exc, "sqlstate", None) == "23505" and diag is not None and diag.table_name == self.ledger.table:
            once = diag.constraint_name == self.ledger.once_index[:63]
            return TransientError(
                (f"version {version} was already applied by another run while this one ran"
                 if once and version else "another run wrote to the ledger at the same time")
                + "; nothing of this file was committed", file=file,
                hint="retry: the run re-reads the ledger and skips what is done; find out why two runs "
                     "held the lock (a lost lock session, a pooler in transaction mode)")
        return classify(exc, file=file, statement=statement, what=what)

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

    def _reset_quietly(self, conn: psycopg.Connection) -> None:
        """After a file run outside one transaction (statements, backfills): the reset in one round trip.
        A session that broke is closed by its owner, and a failing reset must not hide the file's error."""
        if conn.broken or conn.closed:
            return
        try:
            conn.execute(sql.SQL("; ").join(sql.SQL(x) for x in _RESET))
            self._set(conn, self._session, local=False)
        except psycopg.Error:
            pass

    def _fence(self, conn: psycopg.Connection) -> None:
        """Inside a transaction that writes the ledger: abort it unless this session holds the lock."""
        conn.execute(sql.SQL("SELECT {}").format(_FENCE.format(key=sql.Literal(self._key))))

    def _reset_and_fence(self, conn: psycopg.Connection, reset: bool) -> None:
        """In a file's transaction, before its ledger row: the session given back as it was opened (see the
        module docstring) when the file may have changed it, then the lock's fence; works in a pipeline,
        one statement per execute. The session's own settings and the fence share one SELECT (issue 24:
        each statement of a file's pipeline costs the client as much as the server)."""
        settings = self._session if reset else {}
        if reset:
            for statement in _RESET_BYTES:
                conn.execute(statement)
        self._set_cached(conn, settings, local=False, fence=True)

    def _set_cached(self, conn: psycopg.Connection, settings: dict[str, str], *, local: bool,
                    fence: bool = False) -> None:
        """``_set`` (plus the fence, when asked) with the SELECT composed once per run, not once per file."""
        key = (tuple(settings), local, fence, conn.info.encoding)
        query = self._queries.get(key)
        if query is None:
            parts = [sql.SQL("set_config({}, %s, {})").format(sql.Literal(k), sql.Literal(local)) for k in settings]
            if fence:
                parts.append(_FENCE.format(key=sql.Literal(self._key)))
            query = self._queries[key] = sql.SQL("SELECT {}").format(sql.SQL(", ").join(parts)).as_bytes(conn) \
                if parts else b""
        if query:
            conn.execute(query, list(settings.values()))

    def _as_connected(self, conn: psycopg.Connection) -> None:
        conn.execute(_AS_CONNECTED)
        self._fence(conn)

    def _statements(self, migration: Migration, body: str) -> list[Statement]:
        statements = split(body, file=migration.path, server_version=self.server_version)
        check_transaction_control(statements, migration.path, migration.directives.transactional)
        return statements

    def _run_transactional(self, migration: Migration, statements: list[Statement], settings: dict[str, str],
                           record: Callable[[psycopg.Connection], None]) -> int:
        """All statements and ``record(conn)`` in one transaction; returns the elapsed ms.

        One round trip (issue 24; psycopg's ``transaction()`` in a pipeline costs three more, syncing
        after BEGIN, before COMMIT and after it): BEGIN, the file, the session reset, the lock fence,
        its ledger row and COMMIT go to the server behind one Sync, which is what brings a run of
        many small files near ``psql -1``. The server stops at the first error and skips the rest,
        COMMIT included; the transaction is then rolled back here. The first statement without a
        result is the one that failed. The reset is left out only when no statement of the file can
        change its session (``statements.may_change_session``).
        """
        conn = self.conn
        started = time.monotonic()
        cursors: list[psycopg.Cursor] = []
        try:
            with conn.pipeline():
                conn.execute(b"BEGIN")
                self._set_cached(conn, settings, local=True)
                for s in statements:
                    cursors.append(conn.execute(s.text))
                # the reset before the ledger row: it is written as the connecting user
                self._reset_and_fence(conn, any(s.session for s in statements))
                record(conn)
                conn.execute(b"COMMIT")
        except psycopg.Error as exc:
            self._roll_back(conn)
            failed = next((s for s, c in zip(statements, cursors) if c.pgresult is None), None)
            raise self._error(exc, file=str(migration.path), statement=failed,
                              version=str(migration.version) if migration.version is not None else None,
                              what=None if failed else "the commit failed (a deferred constraint, or the ledger row)") from exc
        return int((time.monotonic() - started) * 1000)

    @staticmethod
    def _roll_back(conn: psycopg.Connection) -> None:
        """End the transaction a failed pipeline left open (a failed COMMIT already ended it)."""
        if conn.closed or conn.broken:
            return
        if conn.info.transaction_status in (psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR):
            try:
                conn.execute("ROLLBACK")
            except psycopg.Error:
                log.warning("could not roll back the failed file's transaction; closing the session", exc_info=True)
                conn.close()

    @contextmanager
    def _begin(self, conn: psycopg.Connection, options: tuple) -> Iterator[None]:
        """A transaction with the options of the file's own ``BEGIN ISOLATION LEVEL …``."""
        saved = (conn.isolation_level, conn.read_only, conn.deferrable)
        for name, value in options:
            if name == "transaction_isolation":
                conn.isolation_level = psycopg.IsolationLevel[str(value).upper().replace(" ", "_")]
            elif name == "transaction_read_only":
                conn.read_only = bool(value)
            elif name == "transaction_deferrable":
                conn.deferrable = bool(value)
        try:
            with conn.transaction():
                yield
        finally:
            if not conn.closed and not conn.broken:
                conn.isolation_level, conn.read_only, conn.deferrable = saved

    def _start_row(self, migration: Migration, ctx: RunContext, resume: LedgerEntry | None, progress: dict,
                   version: str | None) -> int:
        """The ledger row a file runs under, marked ``started`` behind the lock's fence: the resumed
        row of an incomplete run, else a new one with ``progress``. Its rank."""
        conn = self.conn
        try:
            with conn.transaction():
                self._fence(conn)
                if resume is not None:
                    self.ledger.update(conn, self.domain, resume.installed_rank,
                                       {"status": Status.STARTED, "run_id": ctx.run_id,
                                        "installed_by": ctx.actor or "unknown"})
                    return resume.installed_rank
                rank = self.ledger.insert(conn, self._row(migration, ctx, Status.STARTED, progress=progress))
                assert rank is not None
                return rank
        except psycopg.Error as exc:
            raise self._error(exc, file=str(migration.path), what="writing the 'started' ledger row failed",
                              version=version) from exc

    def _finish_row(self, rank: int, migration: Migration, version: str | None, ms: int, progress: dict,
                    unit: str) -> None:
        """The ``success`` of a file run in committed units (steps, batches), behind the lock's fence."""
        try:
            with self.conn.transaction():
                self._fence(self.conn)
                self.ledger.update(self.conn, self.domain, rank, {"status": Status.SUCCESS, "success": True,
                                                                  "execution_time": ms, "progress": progress})
        except psycopg.Error as exc:
            raise self._error(exc, file=str(migration.path), what=f"recording success failed after every {unit} "
                              "committed (a retry only records it)", version=version) from exc

    def _run_steps(self, migration: Migration, statements: list[Statement], settings: dict[str, str],
                   start_at: int, progress: Callable[[psycopg.Connection, int], None] | None,
                   resuming: bool = False) -> None:
        """The file step by step (``statements.steps``), each transaction committed with ``progress``,
        each statement that cannot run in one followed by ``progress``. When ``resuming``, first
        repairs what an interrupted run of statement ``start_at`` left behind."""
        conn = self.conn
        n = len(statements)
        current: Statement | None = None
        done = start_at
        try:
            self._set(conn, settings, local=False)
            for step in steps(statements, migration.directives.transactional):
                if step.end <= start_at:
                    continue
                todo = [s for s in step.statements if s.index >= start_at]
                if not step.transaction:
                    current = todo[0]
                    done_already = resuming and current.index == start_at and repair_leftover(conn, current)
                    if not done_already:
                        conn.execute(current.text)
                    if progress:
                        with conn.transaction():
                            self._as_connected(conn)
                            progress(conn, step.end)
                else:
                    with self._begin(conn, step.begin_options):
                        for current in todo:
                            if not current.transaction_control:  # the transaction itself is ours
                                conn.execute(current.text)
                        if progress:
                            self._as_connected(conn)
                            progress(conn, step.end)
                done = step.end
        except psycopg.Error as exc:
            i = current.index if current else start_at
            raise self._error(exc, file=str(migration.path), statement=current,
                              what=f"statement {i + 1} of {n} failed ({done} done and committed; "
                                   f"a retry resumes at statement {done + 1})") from exc
        finally:
            self._reset_quietly(conn)

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
        return import_history(self, ctx, schema=schema, table=table)

    def adopt(self, ctx: RunContext, migrations: list[Migration], *, source: str | None = None) -> AdoptReport:
        """Flyway's history: ``source`` is ``[schema.]table`` (default ``public.flyway_schema_history``)."""
        schema, _, table = (source or "flyway_schema_history").rpartition(".")
        schema = schema or "public"
        return AdoptReport(f"{schema}.{table}", self.import_flyway(ctx, schema=schema, table=table))

    def snapshot(self) -> dict[str, Any]:
        conn = self._ensure_ledger()
        schema = self.schema or conn.execute("SELECT current_schema()").fetchone()[0]
        skip = [self.ledger.table, self.ledger.table + "_lock"] if schema == self.ledger.schema else []
        return take_snapshot(conn, schema, skip)

    def index_baseline(self, dropped: list[str]) -> dict[str, Any] | None:
        """How the workload used the indexes ``dropped`` names, read before they are dropped (polymigrate.impact)."""
        from polymigrate.impact import pg_baseline

        conn = self._ensure_ledger()
        schema = self.schema or conn.execute("SELECT current_schema()").fetchone()[0]
        return pg_baseline(conn, schema, dropped)

    def health_checks(self, ctx: RunContext, migrations: list[Migration]) -> list[Check]:
        """No INVALID index in the schema, and no constraint left ``NOT VALID`` unless the domain's
        ``allow_not_valid`` names it (``table.constraint`` patterns: a constraint validated by a later
        release on purpose)."""
        from fnmatch import fnmatchcase

        from polymigrate.adapters.postgresql.snapshot import invalid_indexes, not_valid_constraints

        conn = self._ensure_ledger()
        schema = self.schema or conn.execute("SELECT current_schema()").fetchone()[0]
        bad = invalid_indexes(conn, schema)
        checks = [Check("invalid indexes", not bad, technology=self.technology, detail=(
            f"{len(bad)} INVALID index(es) in schema {schema}: " + ", ".join(f"{i} on {t}" for i, t in bad)
            + " (an interrupted CREATE INDEX CONCURRENTLY: DROP INDEX CONCURRENTLY it and create it again)"
            if bad else f"none in schema {schema}"))]
        allowed = list(getattr(self.settings, "allow_not_valid", None) or [])
        found = not_valid_constraints(conn, schema)
        left = [(t, c) for t, c, _ in found if not any(fnmatchcase(f"{t}.{c}", p) or fnmatchcase(c, p) for p in allowed)]
        declared = len(found) - len(left)
        checks.append(Check("NOT VALID constraints", not left, technology=self.technology, detail=(
            f"{len(left)} constraint(s) in schema {schema} still NOT VALID: " + ", ".join(f"{t}.{c}" for t, c in left)
            + " (ALTER TABLE … VALIDATE CONSTRAINT in a migration, or list them under allow_not_valid in domain.yaml)"
            if left else f"none left in schema {schema}" + (f" ({declared} declared in allow_not_valid)" if declared else ""))))
        return checks

    def sqlalchemy_url(self) -> Any:
        """This target as a SQLAlchemy ``URL`` (psycopg 3 driver), for libraries that take one (GX)."""
        from sqlalchemy.engine import URL

        k = {key: v for key, v in self._given().items() if v not in (None, "")}
        # a Unix socket's folder (pgserver, a local server) is no URL host: libpq takes it, and the port
        # naming its socket file, as query parameters
        socket = str(k.get("host", "")).startswith("/")
        moved = ("user", "password", "dbname") if socket else ("host", "port", "user", "password", "dbname")
        query = {key: str(v) for key, v in k.items() if key not in moved}
        return URL.create("postgresql+psycopg", username=k.get("user"), password=k.get("password"),
                          host=None if socket else k.get("host"),
                          port=int(k["port"]) if k.get("port") and not socket else None,
                          database=k.get("dbname"), query=query)

    def run_expectations(self, suites: list[Any]) -> list[Check]:
        """The suites through GX Core's SQL datasource; unqualified tables are in the domain's schema."""
        from polymigrate.expectations import run_sql_suites

        if not suites:
            return []
        url = self.sqlalchemy_url()
        try:
            outcomes = run_sql_suites(suites, url, self.schema)
        except Exception as exc:  # noqa: BLE001  GX wraps driver errors in its own: say which target
            message = (str(exc).splitlines() or [type(exc).__name__])[0]
            if url.password:  # GX and SQLAlchemy may quote the connection string in their errors
                message = message.replace(str(url.password), "***")
            raise PermanentError(f"{self.target}: the expectation suites could not run: {message[:300]}",
                                 hint="check each suite's object (table and schema) and arguments") from None
        return self._expectation_checks(outcomes)
