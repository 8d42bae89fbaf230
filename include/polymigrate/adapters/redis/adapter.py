"""The Redis adapter: versioned Lua migrations run in short batches, a ledger and a lease lock.

Keys polymigrate owns in the target, under a namespace (``polymigrate:{<domain>}`` unless the
domain's ``redis.ledger`` setting names another; the braces are a hash tag, so on a cluster all
three keys live in one slot and can change together):

* ``<ns>:ledger``   hash, field = installed rank, value = the ``LedgerEntry`` as JSON;
* ``<ns>:progress`` hash, field = installed rank, value = ``{cursor, processed, batches, done}`` of
  a migration still running (written by the batch itself, see ``scripts``);
* ``<ns>:lock``     the lease (``lease``).

Redis has no transactions spanning a script's batches, so a migration writes ``started`` before the
first batch, progress with every batch and ``success`` at the end; a retry gets the incomplete row as
``resume`` and continues from its cursor.

Every write to the ledger and the progress hash is fenced by the lease: one Lua call compares the
lock key with this run's token and writes only if they match (the batch script does the same for
its own progress row). A run that froze past its lease (a paused VM, a SIGSTOP, a long GC) and
wakes up after another run took over, or finished, cannot overwrite what that run recorded: its
writes are refused and it stops with a transient error. A failure never deletes the progress, so
the cursor survives it.
"""

from __future__ import annotations

import getpass
import json
import logging
import re
import time
from collections import Counter
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis import exceptions as rexc
from redis.cluster import RedisCluster

from polymigrate.adapters.base import Adapter, Applied, Capabilities, Check, RepairReport, holding
from polymigrate.adapters.redis import DESCRIPTOR
from polymigrate.adapters.redis.lease import Lease
from polymigrate.adapters.redis.scripts import (LEASE_LOST, check_same_slot, classify, declared_keys, is_transient,
                                                parse_reply, text, wrap)
from polymigrate.catalog import Migration
from polymigrate.errors import PermanentError, TransientError
from polymigrate.ledger import LedgerEntry, RunContext, Status
from polymigrate.adapters.documents import baseline_entry, repair_rows
from polymigrate.recovery import UNTOUCHED, take_new_text

DEFAULT_BATCH_SIZE = 100
DEFAULT_LEASE_MS = 15_000
# Server time one script call may use before it hands control back (plus the batch it is in): far
# below any client's timeout, large enough that round trips do not dominate a million-key run.
DEFAULT_CALL_BUDGET_MS = 1.0
SNAPSHOT_MAX_KEYS = 100_000  # a snapshot samples this many keys at most; enough to see every key shape
_GLOB = re.compile(r"[*?\[\]\\]")
log = logging.getLogger(__name__)
# KEYS: lock, ledger, progress (one hash tag: one slot on a cluster). ARGV: token ('' when no lease is
# held: a direct caller outside the executor), rank, ledger row JSON or '', progress JSON or '', '1' to
# drop the progress row. The compare and the writes are one atomic call: the lease's fencing.
_FENCED_WRITE = (
    "if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('"
    + LEASE_LOST + "') end\n"
    "if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) end\n"
    "if ARGV[4] ~= '' then redis.call('HSET', KEYS[3], ARGV[2], ARGV[4]) end\n"
    "if ARGV[5] == '1' then redis.call('HDEL', KEYS[3], ARGV[2]) end\n"
    "return 1\n")
_VARIABLE_SEGMENT = re.compile(r"^(\d+|[0-9a-f]{8}-[0-9a-f-]{27}|[0-9a-f]{16,}|\{.*\})$", re.IGNORECASE)


class RedisAdapter(Adapter):
    """Adapter for one Redis target (standalone, or a ``RedisCluster`` client)."""

    technology = "redis"
    capabilities = Capabilities(transactional=False, reversible=False, resumable=True)

    def __init__(self, client: Any, *, domain: str, settings: Any = None, lease_ms: int = DEFAULT_LEASE_MS,
                 call_budget_ms: float = DEFAULT_CALL_BUDGET_MS):
        super().__init__(client, domain=domain, settings=settings)
        self.cluster = isinstance(client, RedisCluster)
        self.namespace = (getattr(settings, "ledger", None) or f"polymigrate:{{{domain}}}").rstrip(":")
        self.key_prefix = getattr(settings, "key_prefix", None) or ""
        self._longest_call_ms = 0
        if _GLOB.search(self.key_prefix):
            raise PermanentError(f"redis key_prefix {self.key_prefix!r} of domain {domain} contains a glob character",
                                 hint="use a plain prefix such as 'social:'; scripts use it in SCAN MATCH patterns")
        if self.cluster and not re.search(r"\{[^}]+\}", self.namespace):
            raise PermanentError(f"redis ledger namespace {self.namespace!r} has no hash tag, so its keys would "
                                 "land in different cluster slots", hint="write it as e.g. 'migrations:{shop}'")
        self.ledger_key = f"{self.namespace}:ledger"
        self.progress_key = f"{self.namespace}:progress"
        self.lock_key = f"{self.namespace}:lock"
        self.lease_ms = lease_ms
        self.call_budget_ms = call_budget_ms
        self._leases: list[Lease] = []
        self._owns_client = False
        self._write_sha: str | None = None

    @classmethod
    def from_url(cls, url: str, *, domain: str, settings: Any = None, **kw: Any) -> "RedisAdapter":
        """``redis://[user:password@]host:port/db``; ``?cluster=true`` for a Redis Cluster,
        ``?lease_ms=N`` for the lock lease (how long a crashed run blocks the next one),
        ``?call_budget_ms=N`` for the server time one script call may use (0: one batch per call)."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        is_cluster = query.pop("cluster", "false").lower() in ("1", "true", "yes")
        if "lease_ms" in query:
            kw.setdefault("lease_ms", int(query.pop("lease_ms")))
        if "call_budget_ms" in query:
            kw.setdefault("call_budget_ms", float(query.pop("call_budget_ms")))
        clean = urlunsplit(parts._replace(query=urlencode(query)))
        client = RedisCluster.from_url(clean) if is_cluster else redis.Redis.from_url(clean)
        adapter = cls(client, domain=domain, settings=settings, **kw)
        adapter._owns_client = True
        return adapter

    @property
    def target(self) -> str:
        if self.cluster:
            node = self.client.get_default_node()
            return f"redis-cluster://{node.host}:{node.port} {self.namespace}"
        kw = self.client.connection_pool.connection_kwargs
        where = kw.get("path") or f"{kw.get('host', 'localhost')}:{kw.get('port', DESCRIPTOR.default_port)}"
        return f"redis://{where}/{kw.get('db', 0)} {self.namespace}"

    # -- lock -------------------------------------------------------------------------------

    def lock(self, owner: str, wait_seconds: float) -> AbstractContextManager[None]:
        lease = Lease(self.client, self.lock_key, owner, self.lease_ms)
        lease.acquire(wait_seconds, self.target)
        return holding(self._leases, lease)

    # -- ledger -----------------------------------------------------------------------------

    def read_ledger(self) -> list[LedgerEntry]:
        """Ledger rows by rank, with the live progress of a running or interrupted migration.

        Nothing is created: a Redis hash exists once its first row is written.
        """
        try:
            rows = self.client.hgetall(self.ledger_key)
            live = self.client.hgetall(self.progress_key)
        except rexc.RedisError as exc:
            if not is_transient(exc):
                raise PermanentError(f"{self.target}: cannot read the ledger: {exc} (retrying cannot help)",
                                     hint="check the connection settings: database index, ACL user and password, "
                                          "TLS") from exc
            raise TransientError(f"{self.target}: cannot read the ledger: {exc}") from exc
        progress = {text(k): json.loads(v) for k, v in live.items()}
        entries = []
        for rank, raw in rows.items():
            entry = LedgerEntry.from_dict(json.loads(raw))
            entry.progress.update(progress.get(text(rank), {}))
            entries.append(entry)
        return sorted(entries, key=lambda e: e.installed_rank)

    def _write(self, entry: LedgerEntry, *, row: bool = True, progress: dict | None = None,
               clear_progress: bool = False) -> None:
        """Write the ledger row and/or the progress row of ``entry``, only while this run holds the lease."""
        lease = self._lease()
        args = [self.lock_key, self.ledger_key, self.progress_key, lease.token if lease else "",
                str(entry.installed_rank), json.dumps(entry.to_dict()) if row else "",
                json.dumps(progress) if progress is not None else "", "1" if clear_progress else "0"]
        try:
            for attempt in range(3):  # EVALSHA; a server that lost its script cache gets it again
                if self._write_sha is None:
                    self._write_sha = text(self.client.script_load(_FENCED_WRITE))
                try:
                    self.client.evalsha(self._write_sha, 3, *args)
                    break
                except rexc.NoScriptError:
                    self._write_sha = None
                    if attempt == 2:
                        raise
        except rexc.ResponseError as exc:
            if LEASE_LOST not in str(exc):
                raise
            if lease is not None:
                lease.mark_lost()
            raise TransientError(
                f"{self.target}: the migration lock lease of this run expired and another run holds (or held) it; "
                f"this run's write to {entry.script} was refused, so what that run recorded stands",
                file=entry.script, hint="retry: the run re-reads the ledger and resumes from the recorded cursor; "
                "raise lease_ms if the process pauses for long") from None

    def _entry(self, migration: Migration, ctx: RunContext, rank: int) -> LedgerEntry:
        return LedgerEntry(
            installed_rank=rank, version=str(migration.version) if migration.version is not None else None,
            description=migration.description, type=migration.ledger_type, script=migration.script,
            checksum=migration.checksum, installed_by=ctx.actor or getpass.getuser(),
            installed_on=datetime.now(timezone.utc), success=False, status=Status.STARTED, domain=self.domain,
            sha256=migration.sha256, run_id=ctx.run_id, environment=ctx.environment, region=ctx.region)

    # -- apply ------------------------------------------------------------------------------

    def apply(self, migration: Migration, body: str, ctx: RunContext, resume: LedgerEntry | None = None) -> Applied:
        """Run one Lua migration: once, or batch by batch until its cursor is ``"0"``."""
        keys = declared_keys(body)
        if self.cluster:
            check_same_slot(keys, migration)
        d = migration.directives
        batch = d.batch_size or getattr(self.settings, "batch_size", None) or DEFAULT_BATCH_SIZE
        pause = (d.pause_ms if d.pause_ms is not None else getattr(self.settings, "pause_ms", None)) or 0
        started = time.monotonic()
        try:
            if resume is not None:
                entry = resume
                take_new_text(entry, migration)
                entry.progress.pop("error", None)
                previous_ms = entry.execution_time
            else:
                entry = self._entry(migration, ctx, self._next_rank())
                previous_ms = 0
            # nothing of the file has reached the server yet: a new row, or a rerun after an untouched
            # failure (not a row a crashed run left 'started': its script may have run)
            untouched = resume is None or bool(entry.progress.pop(UNTOUCHED, False))
            entry.status, entry.success, entry.run_id = Status.STARTED, False, ctx.run_id
            self._write(entry)
        except rexc.RedisError as exc:
            raise classify(exc, migration, body) from exc
        self._called = False
        self._longest_call_ms = 0
        try:
            self._run(migration, body, keys, entry, batch, pause)
        except Exception as exc:
            error = classify(exc, migration, body)
            # untouched only while no call of the script was sent: SCRIPT LOAD compiles without running,
            # but a script that errors keeps the writes it made before the error
            self._record_failure(entry, error, untouched=untouched and not self._called)
            raise error from exc
        entry.execution_time = previous_ms + int((time.monotonic() - started) * 1000)
        entry.status, entry.success = Status.SUCCESS, True
        try:
            entry.progress.update(self._progress(entry))
            self._write(entry, clear_progress=True)
        except rexc.RedisError as exc:
            # The work is done (progress says so); a retry finds done=true and only records success.
            raise classify(exc, migration, body) from exc
        return Applied(entry.execution_time, statements=int(entry.progress.get("batches", 1)),
                       details={**{k: entry.progress.get(k) for k in ("processed", "batches")},
                                "longest_call_ms": self._longest_call_ms})

    def _next_rank(self) -> int:
        ranks = [int(text(k)) for k in self.client.hkeys(self.ledger_key)]
        return max(ranks, default=0) + 1

    def _progress(self, entry: LedgerEntry) -> dict:
        raw = self.client.hget(self.progress_key, str(entry.installed_rank))
        return json.loads(raw) if raw else {}

    def _lease(self) -> Lease | None:
        return self._leases[-1] if self._leases else None

    def _run(self, migration: Migration, body: str, keys: list[str], entry: LedgerEntry, batch: int,
             pause_ms: int) -> None:
        lease = self._lease()
        # On a standalone server the batch and its progress row change in one script call; a
        # cluster cannot reach the ledger's slot from the script, so progress is written after the
        # batch and the per-key idempotency of the script covers the gap.
        atomic = not self.cluster and lease is not None
        field = str(entry.installed_rank)
        script = wrap(body, progress_key=self.progress_key if atomic else None, field=field,
                      lock_key=self.lock_key, token=lease.token if lease else None,
                      budget_us=0 if pause_ms else int(self.call_budget_ms * 1000))  # a pause is asked between batches
        progress = self._progress(entry) if atomic else dict(entry.progress)
        for shard in self._shards(keys):
            state = progress.get("shards", {}).get(shard.name, {}) if shard.name else progress
            if state.get("done"):
                continue
            cursor = str(state.get("cursor", "0"))
            sha = self._load(script, shard)  # once per node; EVALSHA from then on
            while True:
                if lease is not None and lease.lost:
                    raise TransientError("the migration lock lease was lost (renewal failed); stopping before "
                                         "the next batch", file=migration.path, hint="retry; the run resumes")
                self._called = True
                called = time.monotonic()
                try:
                    raw = self._evalsha(sha, keys, [cursor, batch, self.key_prefix], shard)
                except rexc.NoScriptError:  # the server restarted or flushed its script cache
                    sha = self._load(script, shard)
                    continue
                # one call blocks every other client of the server for as long as it runs
                self._longest_call_ms = max(self._longest_call_ms, int((time.monotonic() - called) * 1000))
                reply = parse_reply(raw)
                cursor = reply.cursor
                if not atomic:
                    self._record_progress(entry, progress, shard.name, reply)
                if reply.one_shot or cursor == "0":
                    break
                if pause_ms:
                    time.sleep(pause_ms / 1000)

    def _record_progress(self, entry: LedgerEntry, progress: dict, shard: str | None, reply) -> None:
        progress["processed"] = int(progress.get("processed", 0)) + reply.processed
        progress["batches"] = int(progress.get("batches", 0)) + reply.batches
        state = progress.setdefault("shards", {}).setdefault(shard, {}) if shard else progress
        state["cursor"], state["done"] = reply.cursor, reply.cursor == "0"
        self._write(entry, row=False, progress=progress)

    def _record_failure(self, entry: LedgerEntry, error: Exception, untouched: bool = False) -> None:
        """Mark the row failed with the error, keeping its cursor (the progress row stays as it is);
        ``untouched``: no call of the script was sent, so a fixed file may rerun (``recovery``)."""
        try:
            entry.status, entry.success = Status.FAILED, False
            entry.progress.update(self._progress(entry))
            entry.progress["error"] = str(error)[:2000]
            if untouched:
                entry.progress[UNTOUCHED] = True
            elif not any(k in entry.progress for k in ("cursor", "batches", "shards")):
                entry.progress["called"] = True  # what_ran: the script ran, its writes before the error stay
            self._write(entry)
        except (rexc.RedisError, TransientError) as exc:
            # the row stays 'started' (resumed the same way), or it is another run's now
            log.warning("could not record the failure of %s: %s", entry.script, exc)

    # -- shards: where a script call goes ----------------------------------------------------

    class _Shard:
        def __init__(self, name: str | None, node: Any = None):
            self.name, self.node = name, node

    def _shards(self, keys: list[str]) -> list["RedisAdapter._Shard"]:
        """Standalone, or a script with declared KEYS: one call target. A keyless (SCAN) script on a
        cluster: every primary in turn, each with its own cursor, since SCAN only sees one node."""
        if not self.cluster or keys:
            return [self._Shard(None)]
        return [self._Shard(n.name, n) for n in sorted(self.client.get_primaries(), key=lambda n: n.name)]

    def _load(self, script: str, shard: "RedisAdapter._Shard") -> str:
        if shard.node is not None:
            return text(self.client.execute_command("SCRIPT LOAD", script, target_nodes=shard.node))
        return text(self.client.script_load(script))

    def _evalsha(self, sha: str, keys: list[str], args: list, shard: "RedisAdapter._Shard"):
        if shard.node is not None:
            return self.client.execute_command("EVALSHA", sha, 0, *args, target_nodes=shard.node)
        return self.client.evalsha(sha, len(keys), *keys, *args)

    # -- recovery verbs (polymigrate.recovery) ----------------------------------------------

    def repair(self, migrations: list[Migration], ctx: RunContext) -> RepairReport:
        """Realign checksums of changed files (a half-done row keeps its cursor); mark rows whose
        file is gone deleted. Fenced by the lease like every ledger write."""
        try:
            return repair_rows(migrations, self.read_ledger(),
                               lambda e: self._write(e, clear_progress=e.status is Status.DELETED))
        except rexc.RedisError as exc:
            raise (TransientError if is_transient(exc) else PermanentError)(f"{self.target}: repair: {exc}") from exc

    def baseline(self, version: str, description: str, ctx: RunContext) -> None:
        """Mark everything up to ``version`` as applied without running it (an empty ledger only)."""
        try:
            if self._baseline_wanted(version, self.ledger_key):
                self._write(baseline_entry(self.domain, self._next_rank(), version, description, ctx))
        except rexc.RedisError as exc:
            raise (TransientError if is_transient(exc) else PermanentError)(f"{self.target}: baseline: {exc}") from exc

    def health_checks(self, ctx: RunContext, migrations: list[Migration]) -> list[Check]:
        """The last migration finished: its row says success and its cursor (every shard's, on a
        cluster) came back to ``0``, with no live progress row left behind."""
        entries = [e for e in self.read_ledger() if e.status not in (Status.DELETED, Status.UNDONE)]
        if not entries:
            return [Check("last cursor finished", True, "no migration recorded", technology=self.technology)]
        last = entries[-1]
        cursors = {name: str(st.get("cursor", "0")) for name, st in (last.progress.get("shards") or {}).items()}
        if "cursor" in last.progress:
            cursors[""] = str(last.progress["cursor"])
        open_cursors = {k: v for k, v in cursors.items() if v != "0"}
        live = bool(self.client.hexists(self.progress_key, str(last.installed_rank)))
        problems = []
        if last.status not in (Status.SUCCESS, Status.BASELINE):
            problems.append(f"{last.script} is {last.status.value}")
        if open_cursors:
            problems.append(f"{last.script} stopped at cursor " + ", ".join(
                f"{k + ' ' if k else ''}{v}" for k, v in sorted(open_cursors.items())))
        if live and last.status is Status.SUCCESS:
            problems.append(f"{last.script} left a progress row in {self.progress_key}")
        detail = ("; ".join(problems) + " (run the DAG again: the migration resumes from its cursor)" if problems
                  else f"{last.script}: {last.progress.get('processed', 0)} key(s) in "
                       f"{last.progress.get('batches', 1)} batch(es), cursor back to 0")
        return [Check("last cursor finished", not problems, detail, technology=self.technology)]

    # -- snapshot ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Key shapes under the domain's prefix (numeric and id segments as ``*``), with type,
        count and how many carry a TTL; polymigrate's own keys are left out."""
        shapes: dict[tuple[str, str], Counter] = {}
        seen = 0
        truncated = False
        batch: list = []

        def flush() -> None:
            pipe = self.client.pipeline(transaction=False)
            for k in batch:
                pipe.type(k)
                pipe.pttl(k)
            replies = pipe.execute()
            for i, k in enumerate(batch):
                kind, ttl = text(replies[2 * i]), replies[2 * i + 1]
                c = shapes.setdefault((_shape(text(k)), kind), Counter())
                c["count"] += 1
                c["with_ttl"] += 1 if ttl is not None and ttl >= 0 else 0
            batch.clear()

        for key in self.client.scan_iter(match=f"{self.key_prefix}*", count=1000):
            if text(key).startswith(self.namespace + ":"):
                continue
            if seen >= SNAPSHOT_MAX_KEYS:
                truncated = True
                break
            seen += 1
            batch.append(key)
            if len(batch) >= 1000:
                flush()
        if batch:
            flush()
        return {"key_prefix": self.key_prefix, "sampled_keys": seen, "truncated": truncated,
                "shapes": [{"shape": s, "type": t, "count": c["count"], "with_ttl": c["with_ttl"]}
                           for (s, t), c in sorted(shapes.items())]}

    def close(self) -> None:
        for lease in list(self._leases):
            lease.release()
        self._leases.clear()
        if self._owns_client:
            self.client.close()


def _shape(key: str) -> str:
    """``user:42:profile`` → ``user:*:profile``: the key's pattern without its variable parts."""
    return ":".join("*" if _VARIABLE_SEGMENT.match(seg) else seg for seg in key.split(":"))
