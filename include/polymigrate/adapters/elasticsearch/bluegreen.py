"""``blue_green``: a new index behind an alias without losing a document or a search.

Phases, each recorded in the ledger row (``state``) before the next starts, so a retry after a crash
(kill -9, a lost node, a lost lease) continues where it stopped:

1. ``planned``  the alias's one index is the source; the target is ``<alias>_v<N>`` with N above
   every existing ``<alias>_v*``; the catch-up mode is settled (below).
2. ``created``  the target exists (body from the file and/or the index templates matching it),
   marked in its mapping ``_meta`` as this run's, with ``refresh_interval: -1`` and no replicas
   while it fills (restored before the switch).
3. ``copied``   ``_reindex`` ran as a server task (``slices``, ``requests_per_second``), watched
   through ``_tasks`` with progress and ETA in the log; its id is in the ledger, so a rerun
   re-attaches to it, and when the server lost it the run restarts into a fresh target.
4. ``verified`` catch-up passes; counts (and the file's verify query) agree between source and target.
5. ``switched`` one ``_aliases`` call: add the target as write index, remove the source with
   ``must_exist`` (so it applies only to the state it was verified against).
6. ``done``     after a last catch-up pass; the source is retained ``retain_days`` for ``undo``.

Writes made to the source while it is copied (catch-up):

* ``{"field": "@timestamp"}`` (or any date or growing number every write sets): before each pass
  the field's maximum is read; the next pass copies documents at or above it (minus ``overlap``,
  for writes that became visible late). Every pass writes with ``version_type: external``: a
  document is only copied when the source's version is newer than the target's, so repeated or
  late passes never overwrite a newer document. Passes repeat until one copies little, then the
  switch, then one last pass for writes that landed between the last pass and the switch.
  Deletions made during the copy are not carried over (a deleted document has no field to find):
  use soft deletes (a flag written with the field), or ``freeze``.
* ``"freeze"``: the source is made read-only (``index.blocks.write``) for the copy: searches go on,
  writers get a ``cluster_block_exception`` (403) to retry until the switch, after which they write
  to the target through the alias. It stays read-only while retained.
* ``"none"``: nothing writes to the source (the file says so); counts must match exactly.
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from polymigrate.adapters.elasticsearch.api import SearchError, check_index_name
from polymigrate.adapters.elasticsearch.steps import (StepContext, TaskLost, check_reindex_response, index_body,
                                                      start_and_watch)
from polymigrate.adapters.elasticsearch.undo import ALIAS_PROPS, _and, carry_deletes, undo_switch  # noqa: F401  (re-exported)
from polymigrate.errors import MigrationError, PermanentError, TransientError
from polymigrate.spec import formats

log = logging.getLogger("polymigrate.elasticsearch")

DATE_TYPES = frozenset({"date", "date_nanos"})
NUMBER_TYPES = frozenset({"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float",
                          "unsigned_long"})
DEFAULT_DATE_OVERLAP_MS = 60_000
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
SETTINGS_WHILE_COPYING = {"index.refresh_interval": "-1", "index.number_of_replicas": 0}


class Restart(Exception):
    """The first copy's task is gone: start over into a fresh target index."""


def versioned_name(alias: str, n: int) -> str:
    return check_index_name(f"{alias}_v{n}")


def next_number(alias: str, names: list[str]) -> int:
    pattern = re.compile(rf"^{re.escape(alias)}_v(\d+)$")
    return max((int(m.group(1)) for m in map(pattern.match, names) if m), default=0) + 1


def field_type(mapping: dict, path: str) -> str | None:
    """The type of dotted ``path`` in a ``{"properties": …}`` mapping."""
    node: Any = {"properties": mapping.get("properties") or {}}
    for part in path.split("."):
        node = (node.get("properties") or {}).get(part)
        if not isinstance(node, dict):
            return None
    return node.get("type") or ("object" if "properties" in node else None)


def overlap_of(value: str | float | None, kind: str) -> float:
    if kind == "date":
        if value is None:
            return DEFAULT_DATE_OVERLAP_MS
        if isinstance(value, (int, float)):
            return float(value)
        m = _DURATION.match(value.strip())
        if not m:
            raise PermanentError(f"catch_up.overlap {value!r} is not a duration", hint="e.g. \"30s\", \"2m\", \"1h\"")
        return float(m.group("n")) * _UNIT_MS[m.group("unit")]
    if isinstance(value, str):
        raise PermanentError(f"catch_up.overlap {value!r}: the field is a number, so is the overlap",
                             hint="give a number (how far below the last pass's maximum the next starts), or none")
    return float(value or 0)


class BlueGreen:
    """One ``blue_green`` step, resumable from ``ctx.state``."""

    def __init__(self, ctx: StepContext, args: formats.BlueGreen):
        self.ctx, self.args, self.api = ctx, args, ctx.api
        self.st = ctx.state
        self.alias = check_index_name(args.alias, "alias")

    # -- the whole step ----------------------------------------------------------------------

    def run(self) -> dict:
        while True:
            try:
                # a try killed between creating the target and recording it left it, empty: keep its name
                if self.st.get("phase") is None or (self.st["phase"] == "planned"
                                                    and not self._ours(self.st.get("target"))):
                    self.plan()
                if self.st["phase"] == "planned":
                    self.create()
                if self.st["phase"] == "created":
                    self.freeze()
                    self.copy()
                if self.st["phase"] == "copied":
                    self.catch_up()
                    self.verify()
                break
            except Restart as why:
                log.warning("%s: %s; restarting into a fresh index", self.ctx.label, why)
                self.discard_target()
            except MigrationError as exc:
                if not isinstance(exc, TransientError):  # a retry (or the lock's new holder) continues frozen
                    self.unfreeze_after_failure()
                raise
        if self.st["phase"] == "verified":
            self.switch()
        if self.st["phase"] == "switched":
            self.last_pass()
        return self.record()

    # -- 1. plan ---------------------------------------------------------------------------

    def plan(self) -> None:
        st, args = self.st, self.args
        if st.get("target"):  # a previous try planned (and maybe created) a target: use a fresh one
            self.discard_target()
        current = self.api.alias_targets(self.alias)
        if not current and self.api.exists(self.alias):
            raise PermanentError(f"{self.alias} is an index, not an alias", hint=(
                f"blue_green switches an alias; move readers to an alias first: create_index {self.alias}_v1, "
                f"reindex {self.alias} → {self.alias}_v1, then delete {self.alias} and add the alias in one _aliases "
                "request (remove_index + add)"))
        if args.source:
            source = check_index_name(args.source)
            if current and source not in current:
                raise PermanentError(f"source {source} is not behind alias {self.alias} (it points to "
                                     f"{', '.join(sorted(current))})", hint="drop 'source' to use the alias's index")
        elif len(current) == 1:
            source = next(iter(current))
        elif not current:
            raise PermanentError(f"alias {self.alias} does not exist, so there is nothing to copy from",
                                 hint="give \"source\": the index to copy (the alias is created at the switch)")
        else:
            raise PermanentError(f"alias {self.alias} points to {len(current)} indices ({', '.join(sorted(current))})",
                                 hint="give \"source\": the one index to copy; blue_green replaces one index")
        if not self.api.exists(source):
            raise PermanentError(f"source index {source} does not exist")
        mapping = next(iter(self.api.get_mapping(source).values())).get("mappings") or {}
        mode, field, kind, overlap = self._catch_up_mode(mapping, source)
        # a discarded half-built index's name is not reused: the ledger and logs name each index once
        n = next_number(self.alias, list(self.api.indices(f"{self.alias}_v*")) + [source] + st.get("discarded", []))
        st.update({"phase": "planned", "source": source, "target": versioned_name(self.alias, n),
                   "alias_existed": bool(current),
                   "props": {k: v for k, v in (current.get(source) or {}).items() if k in ALIAS_PROPS},
                   "mode": mode, "field": field, "field_kind": kind, "overlap": overlap,
                   "marker": uuid.uuid4().hex, "passes": 0})
        self.ctx.checkpoint()

    def _catch_up_mode(self, mapping: dict, source: str) -> tuple[str, str | None, str | None, float | None]:
        cu = self.args.catch_up
        if cu in ("freeze", "none"):
            return cu, None, None, None  # type: ignore[return-value]
        name = cu.field if isinstance(cu, formats.CatchUp) else "@timestamp"
        ftype = field_type(mapping, name)
        kind = "date" if ftype in DATE_TYPES else "number" if ftype in NUMBER_TYPES else None
        if kind is None:
            if cu is None:
                raise PermanentError(
                    f"blue_green {self.alias}: say how writes to {source} during the reindex reach the new index "
                    f"({source} has no date @timestamp field to catch up by)",
                    hint="add \"catch_up\": {\"field\": \"updated_at\"} (a date or growing number every write sets), "
                         "\"catch_up\": \"freeze\" (writes refused until the switch), or \"catch_up\": \"none\" "
                         "(nothing writes to it)")
            raise PermanentError(f"catch_up field {name!r} of {source} is {ftype or 'not mapped'}; it must be a date or "
                                 "a number every write sets", hint="name such a field, or use \"freeze\"")
        return "field", name, kind, overlap_of(cu.overlap if isinstance(cu, formats.CatchUp) else None, kind)

    # -- 2. create -------------------------------------------------------------------------

    def create(self) -> None:
        st = self.st
        body = index_body(self.args.body or {})
        mappings = body.setdefault("mappings", {})
        mappings["_meta"] = {**(mappings.get("_meta") or {}),
                             "polymigrate": {"blue_green": st["marker"], "alias": self.alias, "source": st["source"]}}
        if self._ours(st["target"]):  # made by a try of this step that died before recording it
            self.ctx.fence("recreate the index a killed try made")
            self.api.delete_index([st["target"]])
            log.info("%s: %s was made by a try that stopped before recording it; made again", self.ctx.label,
                     st["target"])
        self.ctx.fence("create the new index")
        self.api.create_index(st["target"], body)
        self.api.health(st["target"])
        live = (self.api.get_settings(st["target"]).get(st["target"]) or {}).get("settings") or {}
        st["restore"] = {k: live.get(k) for k in SETTINGS_WHILE_COPYING}
        self.api.put_settings(st["target"], SETTINGS_WHILE_COPYING)
        st["phase"] = "created"
        self.ctx.checkpoint()
        log.info("%s: created %s for alias %s (copy of %s)", self.ctx.label, st["target"], self.alias, st["source"])

    def _ours(self, target: str | None) -> bool:
        """``target`` exists, carries this step's ``_meta`` marker and no alias (nothing serves it)."""
        if not target or not self.api.exists(target):
            return False
        meta = (next(iter(self.api.get_mapping(target).values())).get("mappings") or {}).get("_meta") or {}
        aliases = (self.api.indices(target).get(target) or {}).get("aliases") or {}
        return (meta.get("polymigrate") or {}).get("blue_green") == self.st.get("marker") and not aliases

    def discard_target(self) -> None:
        """Delete a half-built target of this step (recognised by its ``_meta`` marker, never behind an alias)."""
        st = self.st
        target = st.get("target")
        if target and self.api.exists(target):
            meta = (next(iter(self.api.get_mapping(target).values())).get("mappings") or {}).get("_meta") or {}
            aliases = (self.api.indices(target).get(target) or {}).get("aliases") or {}
            if (meta.get("polymigrate") or {}).get("blue_green") == st.get("marker") and not aliases:
                self.ctx.fence("delete the half-built index")
                self.api.delete_index([target])
                log.info("%s: deleted half-built %s", self.ctx.label, target)
        if target:
            st.setdefault("discarded", []).append(target)
        for key in ("target", "task", "restore", "hw", "hw_next", "copied", "skipped"):
            st.pop(key, None)
        st["phase"] = None

    # -- 3. copy ---------------------------------------------------------------------------

    def freeze(self) -> None:
        st = self.st
        if st["mode"] == "freeze" and not st.get("froze"):
            self.ctx.fence("freeze the source")
            self.api.put_settings(st["source"], {"index.blocks.write": True})
            st["froze"] = True
            self.ctx.checkpoint()
            log.info("%s: %s is read-only until the switch (catch_up: freeze)", self.ctx.label, st["source"])

    def _body(self, query: dict | None) -> dict:
        st, args = self.st, self.args
        source: dict[str, Any] = {"index": st["source"], "size": args.batch_size or self.ctx.batch_size}
        q = _and(args.query, query)
        if q:
            source["query"] = q
        body: dict[str, Any] = {"source": source, "conflicts": "proceed",
                                "dest": {"index": st["target"], "version_type": "external"}}
        if args.pipeline:
            body["dest"]["pipeline"] = args.pipeline
        if args.script:
            body["script"] = args.script
        return body

    def _high_water(self) -> float | None:
        st = self.st
        self.api.refresh(st["source"])
        resp = self.api.search(st["source"], {"size": 0, "query": self.args.query or {"match_all": {}},
                                              "aggs": {"hw": {"max": {"field": st["field"]}}}})
        return (resp.get("aggregations") or {}).get("hw", {}).get("value")

    def _since(self, lower: float | None) -> dict | None:
        st = self.st
        if lower is None:
            return None
        bound = lower - (st["overlap"] or 0)
        if st["field_kind"] == "date":
            return {"range": {st["field"]: {"gte": int(bound), "format": "epoch_millis"}}}
        return {"range": {st["field"]: {"gte": bound}}}

    def copy(self) -> None:
        st = self.st
        what = f"copy {st['source']} → {st['target']}"
        if not st.get("task"):
            if st["mode"] == "field":
                st["hw"] = self._high_water()  # writes after this have the field at or above it
            else:
                self.api.refresh(st["source"])
        try:
            resp = start_and_watch(self.ctx, "task", self._body(None), what, slices=self.args.slices,
                                   requests_per_second=self.args.requests_per_second)
        except TaskLost as exc:
            raise Restart(str(exc)) from None
        check_reindex_response(resp, what)
        st.pop("task", None)
        st["copied"] = int(resp.get("created") or 0) + int(resp.get("updated") or 0)
        st["skipped"] = int(resp.get("noops") or 0) + int(resp.get("deleted") or 0)  # a script's ctx.op
        st["phase"] = "copied"
        self.ctx.checkpoint()

    # -- 4. catch up and verify ------------------------------------------------------------

    def _pass(self, label: str) -> dict:
        """One catch-up pass from the recorded high-water mark; re-run when its task was lost."""
        st = self.st
        if not st.get("task"):
            st["hw_next"] = self._high_water()
        while True:
            try:
                resp = start_and_watch(self.ctx, "task", self._body(self._since(st.get("hw"))),
                                       f"{label} {st['source']} → {st['target']}", slices=self.args.slices)
                break
            except TaskLost:
                continue  # versions make a pass idempotent: run it again
        check_reindex_response(resp, label)
        st.pop("task", None)
        if st.get("hw_next") is not None:
            st["hw"] = st["hw_next"]
        st.pop("hw_next", None)
        self.ctx.checkpoint()
        return resp

    def catch_up(self) -> None:
        st = self.st
        if st["mode"] != "field":
            return
        cu = self.args.catch_up
        max_passes = cu.max_passes if isinstance(cu, formats.CatchUp) else formats.CatchUp.model_fields["max_passes"].default
        while st["passes"] < max_passes:
            resp = self._pass(f"catch-up pass {st['passes'] + 1}")
            st["passes"] += 1
            self.ctx.checkpoint()
            moved = int(resp.get("created") or 0) + int(resp.get("updated") or 0)
            if moved <= max(100, (st.get("copied") or 0) // 1000):
                break

    def verify(self) -> None:
        st, api = self.st, self.api
        if not st.get("restored"):
            restore = {k: v for k, v in (st.get("restore") or {}).items()}
            self.ctx.fence("restore the new index's settings")
            api.put_settings(st["target"], restore)  # None resets a setting to its default
            st["restored"] = True
            self.ctx.checkpoint()
        api.refresh(st["target"])
        api.refresh(st["source"])
        api.health(st["target"])
        src = api.count(st["source"], self.args.query)
        dst = api.count(st["target"])
        pending = api.count(st["source"], _and(self.args.query, self._newer())) if st["mode"] == "field" else 0
        missing = src - (st.get("skipped") or 0) - dst
        counts = {"source": src, "target": dst, "in_flight": pending}
        problems = []
        if missing > pending or (st["mode"] != "field" and missing != 0):
            problems.append(f"{st['source']} has {src:,} documents, {st['target']} {dst:,}"
                            + (f" ({st['skipped']:,} skipped by the script)" if st.get("skipped") else "")
                            + (f"; only {pending:,} were written since the last pass" if st["mode"] == "field" else ""))
        if self.args.verify.query:
            qs = api.count(st["source"], _and(self.args.query, self.args.verify.query))
            qd = api.count(st["target"], self.args.verify.query)
            counts.update(query_source=qs, query_target=qd)
            if abs(qs - qd) > pending:
                problems.append(f"the verify query matches {qs:,} documents in {st['source']} and {qd:,} in {st['target']}")
        st["counts"] = counts
        if problems:
            self.ctx.checkpoint()
            raise PermanentError(f"blue_green {self.alias}: verification failed, the alias was not switched: "
                                 + "; ".join(problems),
                                 hint=f"{st['target']} is kept for inspection and {st['source']} still serves the alias; "
                                      "a retry verifies again (e.g. after writes settle), a changed file starts over")
        st["phase"] = "verified"
        self.ctx.checkpoint()
        log.info("%s: verified %s documents in %s (source %s)", self.ctx.label, f"{dst:,}", st["target"], f"{src:,}")

    def _newer(self) -> dict | None:
        st = self.st
        if st.get("hw") is None:
            return None
        return {"range": {st["field"]: {"gt": st["hw"]} if st["field_kind"] != "date"
                          else {"gt": int(st["hw"]), "format": "epoch_millis"}}}

    # -- 5. switch -------------------------------------------------------------------------

    def switch(self) -> None:
        st = self.st
        actions: list[dict] = [{"add": {"index": st["target"], "alias": self.alias, "is_write_index": True,
                                        **st.get("props", {})}}]
        if st["alias_existed"]:
            actions.append({"remove": {"index": st["source"], "alias": self.alias, "must_exist": True}})
        self.ctx.fence("switch the alias")
        try:
            self.api.update_aliases(actions)
        except SearchError as exc:
            now = self.api.alias_targets(self.alias)
            if not (st["target"] in now and st["source"] not in now):
                raise PermanentError(f"alias {self.alias} is no longer on {st['source']} (now on "
                                     f"{', '.join(sorted(now)) or 'nothing'}); not switched",
                                     hint="someone moved the alias while the copy ran; check it, then retry") from exc
        st["phase"] = "switched"
        st["switched_at"] = datetime.now(timezone.utc).isoformat()
        self.ctx.checkpoint()
        log.info("%s: alias %s switched %s → %s", self.ctx.label, self.alias, st["source"], st["target"])

    def last_pass(self) -> None:
        st = self.st
        if st["mode"] == "field":
            self._pass("final catch-up pass")
            self.api.refresh(st["target"])
        st["phase"] = "done"
        self.ctx.checkpoint()

    def record(self) -> dict:
        st = self.st
        switched = datetime.fromisoformat(st["switched_at"])
        return {"alias": self.alias, "from": st["source"], "to": st["target"], "switched_at": st["switched_at"],
                "retain_until": (switched + timedelta(days=self.args.retain_days)).isoformat(),
                "retain_days": self.args.retain_days, "mode": st["mode"], "field": st.get("field"),
                "field_kind": st.get("field_kind"), "overlap": st.get("overlap"), "hw": st.get("hw"),
                "froze": bool(st.get("froze")), "props": st.get("props", {}), "alias_existed": st["alias_existed"],
                "counts": st.get("counts"), "query": self.args.query, "skipped": int(st.get("skipped") or 0)}

    def unfreeze_after_failure(self) -> None:
        st = self.st
        if st.get("froze") and st.get("phase") not in ("switched", "done"):
            try:
                self.ctx.fence("lift the freeze after a failure")
                self.api.put_settings(st["source"], {"index.blocks.write": None})
                st["froze"] = False
                self.ctx.checkpoint()
                log.info("%s: %s writable again (the step failed before the switch)", self.ctx.label, st["source"])
            except Exception as exc:  # noqa: BLE001  the original failure matters more; say what is left
                log.error("%s: %s is still read-only: %s; lift it with PUT %s/_settings "
                          "{\"index.blocks.write\": null}", self.ctx.label, st["source"], exc, st["source"])
