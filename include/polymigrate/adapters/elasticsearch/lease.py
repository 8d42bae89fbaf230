"""The migration lock of an Elasticsearch/OpenSearch target: a lease document in the ledger index.

* acquire: ``PUT <ledger>/_doc/lock?op_type=create`` — exactly one run creates it;
* renew: a background thread rewrites it every third of the lease with ``if_seq_no`` /
  ``if_primary_term`` of the version it last wrote, so it only ever extends its own lease;
* fence: before every write the lock protects (ledger rows, index and alias changes, starting a
  reindex) the holder renews synchronously the same way. A holder that froze (GC pause, SIGSTOP,
  a cut network) past its lease finds, when it wakes, that the document moved on: the renewal
  fails with 409 and it stops before writing anything;
* take over: a waiting run takes an abandoned lease by a conditional write on the exact version it
  saw unchanged for a whole lease (measured on its own monotonic clock, so clock skew between
  machines does not matter), or at once when the holder's own ``expires_at`` is more than one
  lease in the past;
* release: a conditional delete, so a run that lost its lease never deletes its successor's.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timezone

from polymigrate.adapters.elasticsearch.api import SearchApi, SearchError
from polymigrate.errors import LockNotAcquired, TransientError

LOCK_ID = "lock"
_SEP = " #"
log = logging.getLogger("polymigrate.elasticsearch")


class LeaseLost(TransientError):
    """Another run holds the lock now; this one must stop writing (a retry resumes from the ledger)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Lease:
    """One acquisition of the lock document."""

    def __init__(self, api: SearchApi, index: str, owner: str, lease_ms: int):
        self.api, self.index = api, index
        self.owner = owner or "unknown"
        self.token = f"{self.owner}{_SEP}{uuid.uuid4().hex}"
        self.lease_ms = lease_ms
        self.seq_no: int | None = None
        self.primary_term: int | None = None
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ok = time.monotonic()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def _doc(self, acquired_at: str | None = None) -> dict:
        now = _now_ms()
        return {"kind": "lock", "owner": self.owner, "token": self.token, "lease_ms": self.lease_ms,
                "acquired_at": acquired_at or datetime.now(timezone.utc).isoformat(),
                "renewed_at": now, "expires_at": now + self.lease_ms}

    def _took(self, resp: dict) -> None:
        self.seq_no, self.primary_term = resp["_seq_no"], resp["_primary_term"]
        self._last_ok = time.monotonic()

    def acquire(self, wait_seconds: float, target: str) -> None:
        """Take the lock, waiting up to ``wait_seconds``; LockNotAcquired names the holder."""
        deadline = time.monotonic() + max(0.0, wait_seconds)
        seen: tuple | None = None  # (seq_no, primary_term) of the holder's document, and when first seen
        seen_at = 0.0
        delay = 0.05
        said_at: float | None = None  # when the wait was last logged
        try:
            while True:
                try:
                    self._took(self.api.put_doc(self.index, LOCK_ID, self._doc(), create=True, refresh=None))
                    break
                except SearchError as exc:
                    if exc.status != 409:
                        raise
                held = self.api.get_doc(self.index, LOCK_ID)
                if held is not None:
                    version = (held["_seq_no"], held["_primary_term"])
                    if version != seen:
                        seen, seen_at = version, time.monotonic()
                    src = held.get("_source") or {}
                    lease_s = float(src.get("lease_ms") or self.lease_ms) / 1000
                    unchanged_for = time.monotonic() - seen_at
                    expired_by_its_clock = int(src.get("expires_at") or 0) + lease_s * 1000 < _now_ms()
                    if unchanged_for >= lease_s or expired_by_its_clock:
                        if self._take_over(held, target):
                            break
                        continue
                    if said_at is None or time.monotonic() - said_at >= 30:
                        # as the other engines do: who holds it, from the first moment of the wait
                        said_at = time.monotonic()
                        log.info("waiting up to %.0fs for the migration lock on %s held by %s (its lease expires "
                                 "in %.0f ms unless renewed)", wait_seconds, target, src.get("owner") or "unknown",
                                 max(0.0, int(src.get("expires_at") or 0) - _now_ms()))
                    if time.monotonic() >= deadline:
                        holder = str(src.get("owner") or "unknown")
                        left = max(0.0, lease_s - unchanged_for)
                        raise LockNotAcquired(
                            f"{target}: migration lock {self.index}/_doc/{LOCK_ID} is held by {holder} "
                            f"(renewed {unchanged_for:.1f}s ago; taken over if not renewed within {left:.0f}s)",
                            holder=holder, hint="wait for that run to finish, or raise lock_wait_seconds; "
                                                "a crashed run's lease expires by itself")
                elif time.monotonic() >= deadline:
                    raise LockNotAcquired(f"{target}: migration lock {self.index} is contended", holder="unknown",
                                          hint="retry")
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())) or 0.01)
                delay = min(delay * 2, 0.5)
        except SearchError as exc:
            raise TransientError(f"{target}: cannot take the migration lock in {self.index}: {exc}") from exc
        self._thread = threading.Thread(target=self._renew_loop, name=f"polymigrate-lease:{self.index}", daemon=True)
        self._thread.start()

    def _take_over(self, held: dict, target: str) -> bool:
        src = held.get("_source") or {}
        try:
            self._took(self.api.put_doc(self.index, LOCK_ID, self._doc(), if_seq_no=held["_seq_no"],
                                        if_primary_term=held["_primary_term"], refresh=None))
        except SearchError as exc:
            if exc.status in (404, 409):
                return False  # released meanwhile, or another waiter was quicker: look again
            raise
        log.warning("%s: took over the migration lock of %s, whose lease was not renewed for %.0fs",
                    target, src.get("owner", "unknown"), float(src.get("lease_ms") or self.lease_ms) / 1000)
        return True

    def renew(self) -> bool:
        """Extend the lease by a conditional write; False (and ``lost``) once it is someone else's."""
        with self._mutex:
            if self.lost:
                return False
            try:
                doc = self._doc()
                resp = self.api.put_doc(self.index, LOCK_ID, doc, if_seq_no=self.seq_no,
                                        if_primary_term=self.primary_term, refresh=None)
            except SearchError as exc:
                if exc.status in (404, 409):
                    self._lost.set()
                    return False
                if time.monotonic() - self._last_ok > self.lease_ms / 1000:
                    self._lost.set()  # unreachable for a whole lease: assume another run took over
                    return False
                raise
            self._took(resp)
            return True

    def fence(self, what: str = "") -> None:
        """Prove the lease is still ours right before a protected write; LeaseLost if not."""
        try:
            ok = self.renew()
        except SearchError as exc:
            raise TransientError(f"cannot renew the migration lock before {what or 'a write'}: {exc}") from exc
        if not ok:
            raise LeaseLost(f"the migration lock {self.index}/_doc/{LOCK_ID} was taken over by another run while "
                            f"this one was not renewing it; stopped before {what or 'writing'}",
                            hint="nothing more was written by this run; the run holding the lock continues, "
                                 "or a retry resumes from the ledger")

    def _renew_loop(self) -> None:
        interval = self.lease_ms / 3000
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except Exception:  # noqa: BLE001  a failed round trip; renew() declares the lease lost when it must
                continue

    def release(self) -> None:
        """Stop renewing; delete the document only if it is still the version this run wrote."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._mutex:
            if self.lost or self.seq_no is None:
                return
            try:
                self.api.delete_doc(self.index, LOCK_ID, if_seq_no=self.seq_no, if_primary_term=self.primary_term)
            except SearchError:
                pass  # taken over, or unreachable: an abandoned lease is taken over after one lease
            self._lost.set()  # released: any later fence must fail
