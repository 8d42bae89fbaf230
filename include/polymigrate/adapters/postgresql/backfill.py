"""PostgreSQL backfills that applications do not feel: one ``UPDATE`` run in keyset batches.

A backfill is an ordinary ``V`` file holding one ``UPDATE`` and the header
``-- polymigrate: backfill=true[, key=id, batch_time=50ms, …]``. It stays a valid SQL migration
(Flyway or ``psql`` would run it as one statement; the checksum is Flyway's), lint and review read
plain SQL, and table, SET expressions, FROM and WHERE come from PostgreSQL's own grammar (pglast)
rather than a format of our own. polymigrate runs it as pgroll and gh-ost run theirs:

* the key range of each batch is found on the key's index (``key > last ORDER BY key LIMIT n``), and
  the file's ``UPDATE`` runs on that range with its own ``WHERE`` ANDed in, so each batch touches at
  most ``n`` rows and locks them only for its own short transaction (``lock_timeout`` set in it);
* the checkpoint (last key, rows scanned and changed) is written to the ledger row **in the same
  transaction** as the batch, after the lock fence (``pg_try_advisory_xact_lock`` of the migration
  lock): a batch and its checkpoint commit together or not at all, so a retry after ``kill -9``
  continues after the last committed batch, and ``SET n = n + 1`` is applied exactly once per row.
  A run that lost its session lost its open batch with it; a session that somehow lost the lock
  fails the fence, so it cannot commit a batch either;
* the batch size adapts to a target duration per batch (``batch_time``, default 50 ms): the rows a
  batch holds are what an application transaction might wait for, so the time is what matters;
* between batches it pauses while sessions of the database wait on locks (``pg_stat_activity``)
  or a replica's replay lag exceeds ``max_lag`` (``pg_stat_replication``, when there are replicas);
* a batch that times out on a lock (or is a deadlock victim) is rolled back, halved and retried,
  rather than failing the run;
* batches commit with ``synchronous_commit = off``: a server crash may lose the last batches, but
  always together with their checkpoints (one transaction), so they are simply run again;
* progress (rows, %, rate, ETA, batch size) is logged every few seconds, which Airflow shows in
  the task log.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psycopg
from pglast import ast, parse_sql
from pglast.parser import ParseError
from pglast.stream import RawStream
from psycopg import sql

from polymigrate.errors import PermanentError, TransientError

log = logging.getLogger("polymigrate.postgres")

DEFAULT_BATCH_TIME = "50ms"
DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_BATCH = 50_000
DEFAULT_MAX_LAG = "10s"
DEFAULT_LOCK_TIMEOUT = "1s"  # per batch: a batch waiting longer is rolled back, halved and retried
MIN_BATCH = 10
PROGRESS_EVERY_S = 5.0
QUICK_RECHECK_S = 0.01
MAX_PAUSE_S = 60.0  # one pause never lasts longer: a database that always has a waiter still moves on
MAX_RETRIES = 30  # consecutive batches lost to lock timeouts / deadlocks before the run gives up (transient)
_RETRY_STATES = {"55P03", "40P01", "40001"}
_HINT = "see docs/postgresql.md#backfills: one UPDATE, e.g. UPDATE users SET full_name = first || ' ' || last WHERE full_name IS NULL"


def duration_seconds(text: str) -> float:
    """``500ms``, ``5s``, ``10min``, ``1h`` (a bare number is seconds) → seconds."""
    m = re.match(r"^(\d+(?:\.\d+)?)\s*(ms|s|min|h)?$", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 5s, 10min, 1h)")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "min": 60, "h": 3600, None: 1}[m.group(2)]


@dataclass(frozen=True)
class BackfillSpec:
    """What the file's ``UPDATE`` says, split so a key range can be ANDed to its ``WHERE``."""

    schema: str | None
    table: str
    alias: str | None
    head: str          # ``UPDATE t AS a SET … [FROM …]``, deparsed by pglast
    where: str | None  # the file's own condition, deparsed
    line: int          # of the UPDATE in the file

    @property
    def relation(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table) if self.schema else sql.Identifier(self.table)

    @property
    def display(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


def parse(body: str, file: str | Path) -> BackfillSpec:
    """The one ``UPDATE`` of a backfill file; ``PermanentError`` naming the file and line otherwise."""
    try:
        stmts = parse_sql(body)
    except ParseError as exc:
        location = exc.args[1] if len(exc.args) > 1 else None
        line = body.count("\n", 0, location) + 1 if isinstance(location, int) else None
        raise PermanentError(f"SQL does not parse: {exc.args[0]}", file=file, line=line) from None
    if len(stmts) != 1 or not isinstance(stmts[0].stmt, ast.UpdateStmt):
        kinds = ", ".join(type(s.stmt).__name__ for s in stmts) or "nothing"
        raise PermanentError(f"a backfill file holds exactly one UPDATE statement; this one has {kinds}",
                             file=file, hint="move the other statements to their own files (" + _HINT + ")")
    raw = stmts[0]
    u = raw.stmt
    start = body.encode()[:raw.stmt_location or 0].decode(errors="replace")
    line = start.count("\n") + _first_line(body[len(start):])
    for what, present in (("WITH", u.withClause), ("RETURNING", getattr(u, "returningClause", None) or getattr(u, "returningList", None))):
        if present:
            raise PermanentError(f"a backfill's UPDATE cannot have {what}", file=file, line=line,
                                 hint="move it into a sub-select of the SET expression or the WHERE")
    where = u.whereClause
    if where is not None and isinstance(where, ast.CurrentOfExpr):
        raise PermanentError("a backfill's UPDATE cannot use WHERE CURRENT OF", file=file, line=line)
    if not u.relation.inh:
        raise PermanentError("a backfill's UPDATE cannot use ONLY", file=file, line=line)
    head = RawStream()(ast.UpdateStmt(relation=u.relation, targetList=u.targetList, fromClause=u.fromClause))
    alias = u.relation.alias.aliasname if u.relation.alias is not None else None
    return BackfillSpec(u.relation.schemaname, u.relation.relname, alias, head,
                        RawStream()(where) if where is not None else None, line)


def _first_line(body: str) -> int:
    """1 + the lines of blanks and ``--`` comments before the statement (``body`` starts at it)."""
    for n, text in enumerate(body.splitlines(), 1):
        s = text.strip()
        if s and not s.startswith("--"):
            return n
    return 1


@dataclass
class Settings:
    batch_size: int
    max_batch: int
    batch_time: float
    max_lag: float
    lock_timeout: str
    statement_timeout: str | None
    pause: float  # between batches (pause_ms), leaving room to the application
    recheck: float = 0.1  # between checks while paused

    @classmethod
    def of(cls, migration: Any) -> "Settings":
        d = migration.directives
        max_batch = d.max_batch or DEFAULT_MAX_BATCH
        return cls(batch_size=max(MIN_BATCH, min(d.batch_size or DEFAULT_BATCH_SIZE, max_batch)), max_batch=max_batch,
                   batch_time=duration_seconds(d.batch_time or DEFAULT_BATCH_TIME),
                   max_lag=duration_seconds(d.max_lag or DEFAULT_MAX_LAG),
                   lock_timeout=(d.lock_timeout or DEFAULT_LOCK_TIMEOUT).replace(" ", ""),
                   statement_timeout=d.statement_timeout.replace(" ", "") if d.statement_timeout else None,
                   pause=(d.pause_ms or 0) / 1000)


@dataclass
class Outcome:
    scanned: int
    updated: int
    batches: int
    seconds: float
    resumed_after: Any
    retries: int
    paused_s: float


def _json_key(value: Any) -> Any:
    """The checkpoint's key as JSON: whole numbers stay numbers, anything else its text (the server
    casts an untyped literal back to the key's type when it is compared)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else str(value)


def fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0:
        return "?"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Backfill:
    """One backfill file on the adapter's session (which holds the migration lock)."""

    def __init__(self, conn: psycopg.Connection, migration: Any, spec: BackfillSpec, settings: Settings, *,
                 fence: Callable[[psycopg.Connection], None],
                 checkpoint: Callable[[psycopg.Connection, dict], None], state: dict):
        self.conn, self.migration, self.spec, self.s = conn, migration, spec, settings
        self.fence, self.checkpoint = fence, checkpoint
        self.state = dict(state)
        self.file = str(migration.path)
        self.floor = max(MIN_BATCH, min(settings.batch_size, settings.max_batch) // 4)

    # -- checks against the live table, before the first batch --------------------------------

    def resolve_key(self, key: str | None) -> str:
        """The key column: ``key=`` of the header or the table's one-column primary key; refused (naming
        the file) when the table is missing, the column is missing or nullable, or no index leads with it."""
        conn, spec = self.conn, self.spec
        name = spec.relation.as_string(conn)
        oid = conn.execute("SELECT to_regclass(%s)::oid", (name,)).fetchone()[0]
        if oid is None:
            where = conn.execute("SELECT current_setting('search_path')").fetchone()[0]
            raise PermanentError(f"backfill table {spec.display} does not exist (search_path: {where})",
                                 file=self.file, line=spec.line,
                                 hint="fix the table name of the UPDATE, or create the table in an earlier migration")
        if key is None:
            rows = conn.execute("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                                "AND a.attnum = i.indkey[0] WHERE i.indrelid = %s AND i.indisprimary "
                                "AND i.indnkeyatts = 1", (oid,)).fetchall()
            if not rows:
                raise PermanentError(f"backfill table {spec.display} has no one-column primary key to batch on",
                                     file=self.file, line=1,
                                     hint="name an indexed NOT NULL column in the header: -- polymigrate: backfill=true, key=<column>")
            return rows[0][0]
        row = conn.execute("SELECT attnotnull FROM pg_attribute WHERE attrelid = %s AND attname = %s "
                           "AND attnum > 0 AND NOT attisdropped", (oid, key)).fetchone()
        if row is None:
            raise PermanentError(f"backfill key column {key!r} does not exist in {spec.display}", file=self.file,
                                 line=1, hint="fix key= in the header (a column name as stored: lower case unless quoted)")
        if not row[0]:
            raise PermanentError(f"backfill key column {key!r} of {spec.display} may be NULL: rows with a NULL key "
                                 "would never be visited", file=self.file, line=1,
                                 hint="batch on a NOT NULL column (the primary key), or make this one NOT NULL")
        indexed = conn.execute("SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                               "AND a.attnum = i.indkey[0] JOIN pg_class c ON c.oid = i.indexrelid "
                               "JOIN pg_am m ON m.oid = c.relam WHERE i.indrelid = %s AND a.attname = %s "
                               "AND i.indisvalid AND m.amname = 'btree' AND i.indpred IS NULL LIMIT 1",
                               (oid, key)).fetchone()
        if indexed is None:
            raise PermanentError(f"backfill key column {key!r} of {spec.display} has no b-tree index leading with it: "
                                 "every batch would scan the table", file=self.file, line=1,
                                 hint="batch on the primary key, or create the index (CONCURRENTLY) in an earlier migration")
        return key

    def estimate_rows(self) -> int:
        n = self.conn.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)",
                              (self.spec.relation.as_string(self.conn),)).fetchone()[0]
        if n is None or n < 0:  # never analysed: count once (the key's index serves it)
            n = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.spec.relation)).fetchone()[0]
        return int(n)

    # -- the batches ---------------------------------------------------------------------------

    def _range_sql(self, key: str, last: Any, n: int) -> sql.Composed:
        """The next batch's last key and size, from the key's index."""
        k = sql.Identifier(key)
        after = sql.SQL("") if last is None else sql.SQL(" WHERE {} > {}").format(k, sql.Literal(last))
        return sql.SQL("SELECT max({k}), count(*) FROM (SELECT {k} FROM {rel}{after} ORDER BY {k} LIMIT {n}) b").format(
            k=k, rel=self.spec.relation, after=after, n=sql.Literal(n))

    def _update_sql(self, key: str, last: Any, hi: Any) -> sql.Composed:
        """The file's UPDATE on ``last < key <= hi``. Both bounds are literals, so the planner sees a
        narrow range and scans the key's index (a bound it cannot see made it scan the whole table)."""
        spec = self.spec
        qk = sql.Identifier(spec.alias or spec.table, key)
        lower = sql.SQL("") if last is None else sql.SQL("{} > {} AND ").format(qk, sql.Literal(last))
        # the user's text goes to the server as written (deparsed by pglast); no client-side parameters
        # are sent with this statement, so a '%' in it is never read as a placeholder
        cond = sql.SQL(" AND ({})").format(sql.SQL(spec.where)) if spec.where else sql.SQL("")
        return sql.SQL("{head} WHERE {lower}{qk} <= {hi}{cond}").format(
            head=sql.SQL(spec.head), lower=lower, qk=qk, hi=sql.Literal(hi), cond=cond)

    def _waits(self) -> tuple[int, float]:
        """(sessions of this database waiting on a lock, worst replica replay lag in seconds)."""
        row = self.conn.execute(
            # waits on tables and rows only: relation-extension and page locks last microseconds, and an
            # advisory wait may be another run queuing for our own migration lock. A session our last
            # batch blocked may still show as waiting for a moment after our commit: only one some
            # session still blocks counts
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event IN ('relation', 'tuple', 'transactionid') "
            "AND pid <> pg_backend_pid() AND cardinality(pg_blocking_pids(pid)) > 0), "
            "(SELECT coalesce(max(extract(epoch FROM replay_lag)), 0) FROM pg_stat_replication)").fetchone()
        return int(row[0]), float(row[1] or 0)

    def _pause(self) -> float:
        """Wait while others wait on locks or replicas lag; the seconds paused."""
        started = time.monotonic()
        told = False
        first = True
        while True:
            waiting, lag = self._waits()
            if waiting == 0 and lag <= self.s.max_lag:
                break
            if first and lag <= self.s.max_lag:
                # an application transaction's own row-lock wait usually ends within milliseconds: only
                # one still there a moment later is worth stopping for
                first = False
                time.sleep(QUICK_RECHECK_S)
                continue
            spent = time.monotonic() - started
            if spent >= MAX_PAUSE_S:
                log.warning("%s: backfill goes on after pausing %.0fs (%d session(s) waiting on locks, replica lag "
                            "%.1fs)", self.migration.script, spent, waiting, lag)
                break
            if not told and spent >= 1.0:
                log.info("%s: backfill paused: %d session(s) waiting on locks, replica lag %.1fs (max_lag %gs)",
                         self.migration.script, waiting, lag, self.s.max_lag)
                told = True
            time.sleep(self.s.recheck)
        return time.monotonic() - started

    def _next_size(self, size: int, n: int, elapsed: float) -> int:
        """Aim at ``batch_time`` with a dead band: change only when a batch took under 2/3 or over 3/2
        of it, by at most 2x. A busy machine makes every batch slow whatever its size (a fixed cost
        per batch), and shrinking then only multiplies that cost; so never below a quarter of the
        first size."""
        target = self.s.batch_time
        if target / 1.5 <= elapsed <= target * 1.5:
            return size
        want = size * min(2.0, max(0.5, target / max(elapsed, 1e-4)))
        return int(min(self.s.max_batch, max(self.floor, want)))

    def run(self, key: str) -> Outcome:
        conn, st = self.conn, self.state
        last = st.get("last_key")
        resumed_after = last
        scanned, updated, batches = int(st.get("scanned", 0)), int(st.get("updated", 0)), int(st.get("batches", 0))
        if st.get("total") is None:
            st["total"] = scanned + self.estimate_rows()
        total = max(int(st["total"]), 1)
        if resumed_after is not None:
            log.info("%s: backfill of %s resumes after %s = %r (%s rows scanned, %s changed)", self.migration.script,
                     self.spec.display, key, last, f"{scanned:,}", f"{updated:,}")
        size = int(st.get("batch_size") or self.s.batch_size)
        started = time.monotonic()
        last_log = None  # the first full batch is logged at once: the operator sees a rate and an ETA early
        scanned_here = retries = streak = 0
        paused = 0.0
        settings = {"lock_timeout": self.s.lock_timeout, "synchronous_commit": "off"}
        if self.s.statement_timeout:
            settings["statement_timeout"] = self.s.statement_timeout
        set_sql = sql.SQL("SELECT {}").format(sql.SQL(", ").join(
            sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v)) for k, v in settings.items()))
        while True:
            t0 = time.monotonic()
            try:
                with conn.transaction():
                    conn.execute(set_sql)
                    self.fence(conn)  # first: a session without the lock does no work at all
                    hi, n = conn.execute(self._range_sql(key, last, size)).fetchone()
                    changed = conn.execute(self._update_sql(key, last, hi)).rowcount if n else 0
                    if n:
                        new = {**st, "key": key, "last_key": _json_key(hi), "scanned": scanned + n,
                               "updated": updated + changed, "batches": batches + 1, "batch_size": size}
                        self.checkpoint(conn, new)
            except psycopg.Error as exc:
                if getattr(exc, "sqlstate", None) in _RETRY_STATES and not conn.broken:
                    retries += 1
                    streak += 1
                    if streak > MAX_RETRIES:
                        raise TransientError(f"backfill of {self.spec.display}: {streak} batches in a row lost to "
                                             f"lock timeouts or deadlocks ({str(exc).strip()})", file=self.file,
                                             hint="retry later: the run resumes after the last committed batch") from exc
                    size = max(MIN_BATCH, size // 2)
                    log.info("%s: backfill batch after %s = %r rolled back (%s); retrying with %d rows",
                             self.migration.script, key, last, str(exc).strip().splitlines()[0], size)
                    time.sleep(self.s.recheck)
                    paused += self._pause() + self.s.recheck
                    continue
                raise
            elapsed = time.monotonic() - t0
            streak = 0
            if not n:
                break
            st = new
            last, scanned, updated, batches = st["last_key"], st["scanned"], st["updated"], st["batches"]
            scanned_here += n
            full = n >= size
            if full:  # a short batch (the end of the table) says nothing about the rate
                size = self._next_size(size, n, elapsed)
            now = time.monotonic()
            if (last_log is None and full) or (last_log is not None and now - last_log >= PROGRESS_EVERY_S):
                last_log = now
                rate = scanned_here / max(now - started - paused, 1e-6)
                pct = min(100.0, 100.0 * scanned / total)
                log.info("%s: backfill %s %s/~%s rows (%.1f%%), %s changed, %s rows/s, batch %d rows ~%.0f ms, ETA %s",
                         self.migration.script, self.spec.display, f"{scanned:,}", f"{total:,}", pct, f"{updated:,}",
                         f"{rate:,.0f}", size, elapsed * 1000, fmt_eta(max(total - scanned, 0) / rate if rate else float("nan")))
            if self.s.pause:
                time.sleep(self.s.pause)
                paused += self.s.pause
            paused += self._pause()
        seconds = time.monotonic() - started
        log.info("%s: backfill %s done: %s rows scanned, %s changed, %d batches, %.1fs (%.1fs paused, %d batches retried)",
                 self.migration.script, self.spec.display, f"{scanned:,}", f"{updated:,}", batches, seconds, paused, retries)
        self.state = {**st, "key": key, "scanned": scanned, "updated": updated, "batches": batches, "done": True}
        return Outcome(scanned, updated, batches, seconds, resumed_after, retries, paused)


def state_of(progress: dict | None) -> dict:
    """The backfill checkpoint kept in a ledger row's ``progress``."""
    b = (progress or {}).get("backfill")
    if isinstance(b, str):
        b = json.loads(b)
    return dict(b or {})
