"""How the PostgreSQL adapter runs a file's statements: in one transaction together with its ledger
row, or (non-transactional files) step by step, each step committing with its progress so a retry
resumes after the last one."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import psycopg

from polymigrate.adapters.postgresql.errors import classify
from polymigrate.adapters.postgresql.lock import _LOST_MARK
from polymigrate.adapters.postgresql.leftovers import repair_leftover
from polymigrate.adapters.postgresql.statements import Statement, check_transaction_control, split, steps
from polymigrate.catalog import Migration
from polymigrate.errors import PermanentError, TransientError
from polymigrate.ledger import LedgerEntry, RunContext, Status

log = logging.getLogger("polymigrate.adapters.postgresql.adapter")


class PostgresSteps:
    """Part of ``PostgresAdapter``: a file run in one transaction with its ledger row, or step by step
    with its progress."""

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

    def preflight(self, items: list[tuple[Migration, str]]) -> None:
        """The run's files in order, so each file's pipeline can parse the next one while the server
        works (``_parse_next``)."""
        self._upcoming = {str(m.path): (items[i + 1] if i + 1 < len(items) else None) for i, (m, _) in enumerate(items)}
        self._parsed = None

    def _statements(self, migration: Migration, body: str) -> list[Statement]:
        parsed, self._parsed = self._parsed, None
        if parsed is not None and parsed[0] == str(migration.path) and parsed[1] == body:
            return parsed[2]
        statements = split(body, file=migration.path, server_version=self.server_version)
        check_transaction_control(statements, migration.path, migration.directives.transactional)
        return statements

    def _parse_next(self, migration: Migration) -> None:
        """Parse the file after ``migration`` now, while the server runs and commits this one: pglast's
        split is the client's largest part of a small file, and this way it costs no wall time (issue
        24, P1). Nothing raised here may reach this file, whose COMMIT is already sent: a file that does
        not parse is left for its own turn, which parses it again and reports it as always."""
        nxt = self._upcoming.get(str(migration.path))
        if nxt is None or nxt[0].directives.backfill:
            return
        try:
            self._parsed = (str(nxt[0].path), nxt[1], self._statements(*nxt))
        except Exception:  # noqa: BLE001
            self._parsed = None

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
                self._parse_next(migration)  # sent already: the server is at work meanwhile
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
