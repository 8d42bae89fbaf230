"""The MongoDB migration lock: a lease document with a fencing token.

One document per domain in ``<ledger>_lock``::

    {_id: <domain>, holder: "<owner> #<random>", owner: "<who, dag, run, task, try>",
     token: <int, +1 at every acquisition>, expires_at: <server time>, acquired_at, renewed_at}

* **acquire**: one conditional write takes the document only when its lease has expired (or inserts it
  the first time), and increments ``token``; the document is never deleted, so tokens only grow;
* **renew**: a thread extends ``expires_at`` three times per lease, conditional on ``holder`` and
  ``token`` still being ours; a renewal that matches nothing means another run took over;
* **fencing**: every ledger and checkpoint write carries the token (``ledger``); rows a newer
  holder touched refuse it, so a holder that was paused (SIGSTOP, a long GC, a cut network) past its
  lease writes nothing after it wakes up. ``assert_held`` also checks the lease locally before each
  batch: a process that slept through its lease notices without a round trip;
* **time** is the server's: the offset to the server clock is measured once (``hello.localTime``), so
  runs on machines with skewed clocks still agree on when a lease expired.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from pymongo import ReturnDocument
from pymongo import errors as perr

from polymigrate.adapters.mongodb.server import is_transient
from polymigrate.errors import LockNotAcquired, TransientError

log = logging.getLogger(__name__)
_SEP = " #"
EPOCH = datetime(1970, 1, 1)


def holder_name(holder: Any) -> str:
    return str(holder or "unknown").rsplit(_SEP, 1)[0]


class ServerClock:
    """``now()`` on the server's clock, from one measured offset (naive UTC, as pymongo returns dates)."""

    def __init__(self, client: Any):
        sent = time.time()
        hello = client.admin.command("hello")
        received = time.time()
        local_time = hello.get("localTime")
        if isinstance(local_time, datetime):
            server = local_time.replace(tzinfo=timezone.utc).timestamp() if local_time.tzinfo is None \
                else local_time.timestamp()
            self.offset = server - (sent + received) / 2
        else:
            self.offset = 0.0

    def now(self) -> datetime:
        return datetime.fromtimestamp(time.time() + self.offset, timezone.utc).replace(tzinfo=None)


class LeaseLost(TransientError):
    """This run no longer holds the migration lock; it stopped before writing anything more."""


class Lease:
    """One acquisition of a domain's lock document (``acquire`` … ``release``, renewed in between)."""

    def __init__(self, collection: Any, key: str, owner: str, lease_ms: int, clock: ServerClock, target: str):
        self.collection = collection
        self.key = key
        self.owner = owner or "unknown"
        self.holder = f"{self.owner}{_SEP}{uuid.uuid4().hex[:12]}"
        self.lease_ms = lease_ms
        self.clock = clock
        self.target = target
        self.token: int | None = None
        self._valid_until = 0.0  # monotonic: the lease is ours until then, unless someone took it
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renew_lock = threading.Lock()

    # -- acquire ----------------------------------------------------------------------------

    def acquire(self, wait_seconds: float) -> int:
        """Take the lease (waiting up to ``wait_seconds``); returns the fencing token."""
        deadline = time.monotonic() + max(0.0, wait_seconds)
        delay, announced = 0.05, False
        while True:
            try:
                token = self._try_take()
                if token is not None:
                    break
                current = self.collection.find_one({"_id": self.key}) or {}
            except perr.PyMongoError as exc:
                if not is_transient(exc):
                    raise
                raise TransientError(f"{self.target}: cannot take the migration lock of {self.key}: {exc}") from exc
            holder = holder_name(current.get("holder"))
            left = (current.get("expires_at") or EPOCH) - self.clock.now()
            if time.monotonic() >= deadline:
                raise LockNotAcquired(
                    f"{self.target}: the migration lock of {self.key} is held by {holder} "
                    f"(token {current.get('token')}, its lease ends in {max(left.total_seconds(), 0):.1f}s unless "
                    f"renewed); gave up after waiting {wait_seconds:g}s", holder=holder,
                    hint="wait for that run to finish, or raise lock_wait_seconds; a crashed run's lease expires by itself")
            if not announced:
                log.info("waiting up to %gs for the migration lock of %s held by %s", wait_seconds, self.key, holder)
                announced = True
            time.sleep(min(delay, max(deadline - time.monotonic(), 0.01)))
            delay = min(delay * 2, 0.5)
        self.token = token
        self._thread = threading.Thread(target=self._renew_loop, name=f"polymigrate-lease:{self.key}", daemon=True)
        self._thread.start()
        return token

    def _try_take(self) -> int | None:
        sent = time.monotonic()
        now = self.clock.now()
        fields = {"holder": self.holder, "owner": self.owner, "expires_at": now + self._duration,
                  "acquired_at": now, "renewed_at": now}
        doc = self.collection.find_one_and_update(
            {"_id": self.key, "expires_at": {"$lte": now}}, {"$set": fields, "$inc": {"token": 1}},
            return_document=ReturnDocument.AFTER)
        if doc is None:
            try:
                self.collection.insert_one({"_id": self.key, "token": 1, **fields})
                doc = {"token": 1}
            except perr.DuplicateKeyError:
                return None  # held (or taken a moment ago by someone else)
        self._valid_until = sent + self.lease_ms / 1000
        return int(doc["token"])

    @property
    def _duration(self) -> timedelta:
        return timedelta(milliseconds=self.lease_ms)

    # -- renew ------------------------------------------------------------------------------

    def renew(self) -> bool:
        """Extend the lease if it is still ours; False (and ``lost``) once someone else holds it."""
        with self._renew_lock:
            if self._lost.is_set():
                return False
            sent = time.monotonic()
            result = self.collection.update_one(
                {"_id": self.key, "holder": self.holder, "token": self.token},
                {"$set": {"expires_at": self.clock.now() + self._duration, "renewed_at": self.clock.now()}})
            if result.matched_count:
                self._valid_until = max(self._valid_until, sent + self.lease_ms / 1000)
                return True
            self._lost.set()
            return False

    def _renew_loop(self) -> None:
        interval = self.lease_ms / 3000
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    log.warning("migration lock of %s lost: another run holds it now", self.key)
                    return
            except Exception as exc:  # noqa: BLE001  keep renewing; assert_held decides from the local clock
                log.warning("renewing the migration lock of %s failed (retrying): %s", self.key,
                            str(exc).split(", full error")[0][-200:])

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def assert_held(self, what: str = "the next write") -> None:
        """Raise ``LeaseLost`` unless the lease is still ours: checked before each batch and command.

        Past the local validity (the process slept through its lease, or renewals failed) it asks the
        server once: the lease is kept if nobody took it meanwhile.
        """
        if not self._lost.is_set() and time.monotonic() < self._valid_until:
            return
        deadline = time.monotonic() + min(10.0, self.lease_ms / 1000)
        while True:
            try:
                if not self._lost.is_set() and self.renew():
                    return
                break
            except perr.PyMongoError as exc:
                # a busy or briefly unreachable server: ask again a few times, never write unconfirmed
                if not is_transient(exc) or time.monotonic() >= deadline:
                    raise LeaseLost(f"{self.target}: cannot confirm the migration lock of {self.key} "
                                    f"({str(exc).split(', full error')[0][-200:]}); stopped before {what}",
                                    hint="retry: the run resumes from the last checkpoint") from exc
                time.sleep(0.2)
        current = self.collection.find_one({"_id": self.key}) or {}
        raise LeaseLost(f"{self.target}: the migration lock of {self.key} passed to {holder_name(current.get('holder'))} "
                        f"(token {current.get('token')}, ours was {self.token}); stopped before {what}",
                        hint="nothing more was written by this run; the other run continues from the checkpoint")

    # -- release ----------------------------------------------------------------------------

    def release(self) -> None:
        """Stop renewing and end the lease if it is still ours; the token stays for the next holder."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.token is None or self._lost.is_set():
            return
        try:
            self.collection.update_one({"_id": self.key, "holder": self.holder, "token": self.token},
                                       {"$set": {"expires_at": EPOCH, "released_at": self.clock.now()}})
        except perr.PyMongoError:
            pass  # unreachable: the lease expires by itself
