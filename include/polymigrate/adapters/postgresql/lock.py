"""The PostgreSQL adapter's migration lock: a session-level advisory lock on a key of the domain, and
the fence every ledger-writing transaction runs so nothing commits once another run may hold the lock."""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from typing import Iterator

import psycopg
from psycopg import sql

from polymigrate.errors import LockNotAcquired, TransientError

log = logging.getLogger("polymigrate.adapters.postgresql.adapter")

# Raised by the fence below, inside the transaction that would record a file: text the server echoes.
_LOST_MARK = "polymigrate: migration lock not held"
# The lock proven at commit time: the holder's session is granted the key again at once (advisory locks
# are re-entrant per session); any other session is refused while the holder lives. The cast fails only
# when the lock is elsewhere, aborting the transaction with a message we recognise (no function to create).
_FENCE = sql.SQL("CASE WHEN pg_try_advisory_xact_lock({key}) THEN 1 "
                 "ELSE ('polymigrate: migration lock not held (pid ' || pg_backend_pid() || ')')::int END")


def _lock_key(text: str) -> int:
    """A stable signed 64-bit advisory lock key."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


class PostgresLock:
    """Part of ``PostgresAdapter``: the session-level advisory lock and the fence that proves it at commit."""

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

    def _fence(self, conn: psycopg.Connection) -> None:
        """Inside a transaction that writes the ledger: abort it unless this session holds the lock."""
        conn.execute(sql.SQL("SELECT {}").format(_FENCE.format(key=sql.Literal(self._key))))
