"""A migration lock for Redis as a lease: SET NX PX with an owner token, renewed while held.

The token starts with the human-readable owner (who, which DAG run, which try) so a waiting run can
say who holds the lock; a random suffix makes it unique to one acquisition. Renewal and release
are compare-and-act Lua scripts, so a run only ever extends or deletes its own lease; a crashed
run's lease simply expires.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from redis import exceptions as rexc

from polymigrate.adapters.redis.scripts import is_transient
from polymigrate.errors import LockNotAcquired, TransientError

log = logging.getLogger(__name__)
_SEP = " #"
_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def holder_of(token) -> str:
    """The owner part of a stored token."""
    value = token.decode() if isinstance(token, bytes) else str(token)
    return value.rsplit(_SEP, 1)[0]


class Lease:
    """One acquisition of the lock key; ``acquire`` then ``release`` (renewed in between)."""

    def __init__(self, client, key: str, owner: str, lease_ms: int):
        self.client = client
        self.key = key
        self.owner = owner or "unknown"
        self.token = f"{self.owner}{_SEP}{uuid.uuid4().hex}"
        self.lease_ms = lease_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost = threading.Event()

    @property
    def lost(self) -> bool:
        """True once a renewal (or a fenced write) found the key gone or owned by someone else."""
        return self._lost.is_set()

    def mark_lost(self) -> None:
        self._lost.set()

    def acquire(self, wait_seconds: float, target: str) -> None:
        """Take the lease, waiting up to ``wait_seconds`` for the holder; LockNotAcquired names it."""
        deadline = time.monotonic() + max(0.0, wait_seconds)
        delay = 0.02
        announced = None
        try:
            while True:
                if self.client.set(self.key, self.token, nx=True, px=self.lease_ms):
                    break
                current = self.client.get(self.key)
                holder = holder_of(current) if current is not None else "unknown (just released)"
                if current is not None and holder != announced and time.monotonic() < deadline:
                    ttl = self.client.pttl(self.key)
                    log.info("waiting up to %gs for the migration lock %s held by %s (its lease expires in %s ms "
                             "unless renewed)", wait_seconds, self.key, holder, ttl)
                    announced = holder
                if time.monotonic() >= deadline:
                    ttl = self.client.pttl(self.key)
                    raise LockNotAcquired(
                        f"{target}: migration lock {self.key} is held by {holder}"
                        + (f" (its lease expires in {ttl} ms unless renewed)" if ttl and ttl > 0 else ""),
                        holder=holder, hint="wait for that run to finish, or raise lock_wait_seconds; "
                        "a crashed run's lease expires by itself")
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, 0.25)
        except rexc.RedisError as exc:
            if not is_transient(exc):
                raise
            raise TransientError(f"{target}: cannot take the migration lock {self.key}: {exc}") from exc
        self._thread = threading.Thread(target=self._renew_loop, name=f"polymigrate-lease:{self.key}", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        # Renew three times per lease so one slow or failed round trip does not lose it.
        interval = self.lease_ms / 3000
        last_ok = time.monotonic()
        while not self._stop.wait(interval):
            try:
                if not self.client.eval(_RENEW, 1, self.key, self.token, self.lease_ms):
                    self._lost.set()
                    return
                last_ok = time.monotonic()
            except Exception:  # noqa: BLE001  a renewal thread must never die noisily; the lease decides
                if time.monotonic() - last_ok > self.lease_ms / 1000:
                    self._lost.set()
                    return

    def release(self) -> None:
        """Stop renewing and delete the key if it is still ours (never someone else's)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        try:
            self.client.eval(_RELEASE, 1, self.key, self.token)
        except rexc.RedisError:
            pass  # unreachable: the lease expires by itself
