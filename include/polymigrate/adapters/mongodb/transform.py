"""``ctx`` of a ``.py`` MongoDB migration, and its batched, resumable document transform.

``up(db, ctx)`` gets a ``MigrationContext``; ``ctx.transform(collection, filter, update)`` changes
every matching document, in ``_id`` order, batch by batch:

1. one cursor reads the matching documents sorted by ``_id`` (from the checkpoint on a resume);
2. each batch is written with one ``bulk_write``: every document's update is guarded by its ``_id``,
   the filter again (the application may have changed it since it was read) and, by default, a
   **marker**: the update also sets ``_polymigrate`` to this application's token, and only matches
   documents not carrying it yet. One document's update is atomic in MongoDB, so a document is
   changed and marked together or not at all;
3. the checkpoint (last ``_id``, documents changed, batches) is written to the ledger row, fenced by
   the lock token (a holder that lost the lock cannot move it);
4. throttle: ``pause_ms`` between batches and ``max_ops_per_sec``; progress with percentage, rate and
   ETA in the log.

Why this is exactly once without transactions: a kill -9 between 2 and 3 (or in the middle of 2)
leaves the checkpoint one batch behind; the retry reads that batch again, and the marker guard makes
the update of the documents already done match nothing. A holder paused past its lease (SIGSTOP)
that wakes up and sends its batch gets the same answer: nothing matches, and its checkpoint write is
refused by the fence. So even ``{"$inc": {"n": 1}}`` is applied once per document. With
``marker=False`` (the filter itself excludes transformed documents, e.g. ``schemaVersion: 1`` → 2)
the filter is the guard and documents carry nothing extra.

Code of ``up`` outside ``ctx.transform`` runs again when a run resumes: keep it idempotent
(``create_index`` is). Finished transforms return at once with their recorded counts.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import bson
from pymongo import ReplaceOne, UpdateMany, UpdateOne
from pymongo import errors as perr

from polymigrate.errors import PermanentError

log = logging.getLogger("polymigrate.mongo")

MARKER = "_polymigrate"
DEFAULT_BATCH_SIZE = 500
# FerretDB 1.x holds a connection per single-document write of one command until the command ends and
# deadlocks a database at 100 of them (its SQLite pool): its commands carry at most this many writes.
FERRET_OPS_PER_COMMAND = 50
PROGRESS_EVERY_S = 5.0
_NAME = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class TransformResult:
    name: str
    collection: str
    processed: int        # documents changed (over every try of this migration)
    batches: int
    seconds: float        # this try
    resumed_after: Any = None  # the checkpoint _id this try started after, if it resumed
    already_done: bool = False


def _fmt_eta(seconds: float) -> str:
    if seconds != seconds or seconds < 0:  # NaN
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class MigrationContext:
    """What a ``.py`` migration's ``up(db, ctx)`` / ``down(db, ctx)`` is given besides the database.

    Attributes: ``db``, ``client``, ``server`` (``ServerInfo``: ``server.is_ferretdb``), ``log``,
    ``migration`` (the catalog entry), ``placeholders``, ``direction`` (``up`` or ``down``).
    """

    def __init__(self, *, db: Any, client: Any, server: Any, migration: Any, direction: str, attempt: str,
                 progress: dict, checkpoint: Callable[[str, dict], None], assert_held: Callable[[str], None],
                 placeholders: dict | None = None, batch_size: int | None = None, pause_ms: int | None = None,
                 resumed: bool = False):
        self.db = db
        self.client = client
        self.server = server
        self.migration = migration
        self.direction = direction
        self.placeholders = dict(placeholders or {})
        self.log = log
        self._attempt = attempt
        self._progress = progress          # {name: state} of finished/partial transforms of this direction
        self._checkpoint = checkpoint      # (name, state) -> fenced ledger write
        self._assert_held = assert_held
        self._batch_size = batch_size
        self._pause_ms = pause_ms
        self._calls = 0
        self._resumed = resumed  # an earlier try of this migration was interrupted
        self.results: list[TransformResult] = []

    # -- the batched transform --------------------------------------------------------------

    def transform(self, collection: str, filter: dict | None = None,
                  update: dict | list | Callable[[dict], Any] | None = None, *, name: str | None = None,
                  projection: dict | None = None, batch_size: int | None = None, pause_ms: int | None = None,
                  max_ops_per_sec: float | None = None, marker: bool = True) -> TransformResult:
        """Apply ``update`` to every document of ``collection`` matching ``filter``, in checkpointed batches.

        ``update``: an update document (``{"$set": …}``), a pipeline (list; MongoDB 4.2+), or a
        function of the document returning one of those, a replacement document, or ``None`` to leave
        the document alone. ``projection`` limits what the function sees (``_id`` always included).
        ``name`` keys the checkpoint (default ``<collection>.<n>``, n counting the calls in this
        ``up``): keep it stable if the file may be resumed after an edit-free retry.
        ``batch_size`` / ``pause_ms`` default to the file's header directives, then the domain's
        ``mongodb`` settings, then 500 / 0. ``max_ops_per_sec`` caps the documents written per second.
        ``marker=False``: the filter alone keeps a document from being changed twice (it must stop
        matching once changed); nothing is added to the documents.
        """
        if update is None:
            raise PermanentError("ctx.transform needs an update (a document, a pipeline or a function)",
                                 file=self.migration.path)
        self._calls += 1
        key = _NAME.sub("_", name or f"{collection}.{self._calls}")[:100]
        state = dict(self._progress.get(key) or {})
        if state.get("done"):
            r = TransformResult(key, collection, int(state.get("processed", 0)), int(state.get("batches", 0)), 0.0,
                                already_done=True)
            log.info("%s: transform %s already finished (%s documents); skipped", self.migration.script, key,
                     f"{r.processed:,}")
            self.results.append(r)
            return r
        batch = int(batch_size or self._batch_size or DEFAULT_BATCH_SIZE)
        pause = (pause_ms if pause_ms is not None else self._pause_ms) or 0
        token = f"{self._attempt}:{self.direction}:{key}"
        base = dict(filter or {})
        guard = {MARKER: {"$ne": token}} if marker else {}
        coll = self.db[collection]
        has_last = "last_id" in state
        last_id = state.get("last_id")
        processed = int(state.get("processed", 0))
        batches = int(state.get("batches", 0))
        started = time.monotonic()
        if marker and self._resumed:
            # documents the interrupted try changed after its last checkpoint carry the marker: count them
            since = {"_id": {"$gt": last_id}} if has_last else {}
            processed += coll.count_documents(_and({MARKER: token}, since))
        if state.get("total") is None:
            state["total"] = processed + coll.count_documents(_and(base, guard))
        total = int(state["total"])
        start_after = last_id if has_last else None
        if has_last:
            log.info("%s: transform %s resumes after _id %r (%s of ~%s done)", self.migration.script, key, last_id,
                     f"{processed:,}", f"{total:,}")
        written_this_try = 0
        last_log = started
        reader = _Reader(coll, base, guard, projection, batch, last_id if has_last else _NONE)
        while True:
            docs = reader.next_batch()
            if not docs:
                break
            self._assert_held(f"batch {batches + 1} of transform {key}")
            ops = _operations(docs, base, guard, update, MARKER if marker else None, token, self.server)
            changed = 0
            step = FERRET_OPS_PER_COMMAND if getattr(self.server, "is_ferretdb", False) else len(ops) or 1
            for i in range(0, len(ops), step):
                try:
                    result = coll.bulk_write(ops[i:i + step], ordered=False)
                except perr.BulkWriteError as exc:
                    raise _with_context(exc, key, docs)
                changed += result.matched_count + result.upserted_count
            processed += changed
            written_this_try += changed
            batches += 1
            last_id = docs[-1]["_id"]
            state.update(collection=collection, last_id=last_id, processed=processed, batches=batches)
            self._checkpoint(key, state)
            now = time.monotonic()
            if now - last_log >= PROGRESS_EVERY_S:
                last_log = now
                rate = written_this_try / max(now - started, 1e-6)
                left = max(total - processed, 0)
                pct = 100.0 * processed / total if total else 100.0
                log.info("%s: transform %s %s/%s (%.1f%%), %s docs/s, ETA %s", self.migration.script, key,
                         f"{processed:,}", f"{total:,}", min(pct, 100.0), f"{rate:,.0f}",
                         _fmt_eta(left / rate if rate else float("nan")))
            wait = pause / 1000
            if max_ops_per_sec:
                wait = max(wait, written_this_try / max_ops_per_sec - (time.monotonic() - started))
            if wait > 0:
                time.sleep(wait)
        state.update(done=True, processed=processed, batches=batches, collection=collection)
        self._checkpoint(key, state)
        seconds = time.monotonic() - started
        log.info("%s: transform %s done: %s documents in %s batches, %.1fs", self.migration.script, key,
                 f"{processed:,}", batches, seconds)
        r = TransformResult(key, collection, processed, batches, seconds, resumed_after=start_after)
        self.results.append(r)
        return r


_NONE = object()


def _and(*parts: dict) -> dict:
    parts = tuple(p for p in parts if p)
    if not parts:
        return {}
    if len(parts) == 1:
        return dict(parts[0])
    keys = [k for p in parts for k in p]
    if len(keys) == len(set(keys)) and not any(k.startswith("$") for k in keys):
        return {k: v for p in parts for k, v in p.items()}
    return {"$and": list(parts)}


class _Reader:
    """One ``_id``-sorted cursor for the whole transform, reopened after the last read ``_id`` when the
    server drops it (idle timeout, failover). One cursor, not one query per batch: a server that
    cannot sort from an index (FerretDB sorts in memory) then sorts once per run, not once per batch."""

    def __init__(self, coll: Any, base: dict, guard: dict, projection: dict | None, batch: int, after: Any):
        self.coll, self.base, self.guard, self.batch = coll, base, guard, batch
        self.projection = None if projection is None else {**projection, "_id": 1}
        self.after = after
        self.cursor = None
        self.reopened = 0

    def _open(self) -> None:
        since = {} if self.after is _NONE else {"_id": {"$gt": self.after}}
        self.cursor = self.coll.find(_and(self.base, self.guard, since), self.projection,
                                     sort=[("_id", 1)], batch_size=self.batch)

    def next_batch(self) -> list[dict]:
        docs: list[dict] = []
        while len(docs) < self.batch:
            if self.cursor is None:
                self._open()
            try:
                doc = next(self.cursor)
            except StopIteration:
                break
            except perr.CursorNotFound:
                self.reopened += 1
                if self.reopened > 100:
                    raise
                self.cursor = None
                continue
            docs.append(doc)
            self.after = doc["_id"]
        return docs


def _with_marker(update: Any, marker: str | None, token: str) -> tuple[str, Any]:
    """(kind, document) with the marker set in the same write: kind is update, pipeline or replace."""
    if isinstance(update, list):
        return "pipeline", update + ([{"$set": {marker: token}}] if marker else [])
    if not isinstance(update, dict) or not update:
        raise PermanentError(f"a transform update must be a non-empty document or pipeline, got {update!r}")
    if all(k.startswith("$") for k in update):
        if not marker:
            return "update", update
        out = copy.copy(update)
        sets = dict(out.get("$set") or {})
        if marker in sets:
            raise PermanentError(f"the transform's update sets {marker}, which polymigrate uses as its marker")
        sets[marker] = token
        out["$set"] = sets
        return "update", out
    if any(k.startswith("$") for k in update):
        raise PermanentError(f"a transform update mixes operators and fields: {sorted(update)}")
    doc = {k: v for k, v in update.items() if k != "_id"}
    if marker:
        doc[marker] = token
    return "replace", doc


def _operations(docs: list[dict], base: dict, guard: dict, update: Any, marker: str | None, token: str,
                server: Any) -> list:
    """The guarded writes of one batch; documents with the same update share one ``$in`` write."""
    groups: dict[bytes, tuple[str, Any, list]] = {}
    ops: list = []
    ferret = bool(getattr(server, "is_ferretdb", False))
    for doc in docs:
        u = update(doc) if callable(update) else update
        if u is None:
            continue
        kind, body = _with_marker(u, marker, token)
        key = kind.encode() + bson.encode({"u": body})
        groups.setdefault(key, (kind, body, []))[2].append(doc["_id"])
    for kind, body, ids in groups.values():
        if kind == "pipeline" and ferret:
            from polymigrate.adapters.mongodb.server import not_supported_error
            raise not_supported_error("a transform whose update is an aggregation pipeline", server)
        if kind == "replace":
            ops += [ReplaceOne(_and({"_id": i}, base, guard), body) for i in ids]
        elif len(ids) > 1:
            ops.append(UpdateMany(_and({"_id": {"$in": ids}}, base, guard), body))
        else:
            # FerretDB 1.x keeps the query of a single-document update open until its command ends (see
            # FERRET_OPS_PER_COMMAND); a multi-update with an _id equality filter releases it at once.
            op = UpdateMany if ferret else UpdateOne
            ops.append(op(_and({"_id": ids[0]}, base, guard), body))
    return ops


def _with_context(exc: perr.BulkWriteError, name: str, docs: list[dict]) -> perr.BulkWriteError:
    errors = (exc.details or {}).get("writeErrors") or []
    if errors:
        errors[0]["errmsg"] = f"transform {name}, batch after _id {docs[0]['_id']!r}: {errors[0].get('errmsg')}"
    return exc
