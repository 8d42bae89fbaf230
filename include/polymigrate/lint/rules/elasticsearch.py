"""Elasticsearch/OpenSearch: mapping changes that need a reindex, writes that bypass aliases,
deleting indices, and how a blue-green reindex treats writes made while it copies.

Files are ``{"description": …, "steps": [{"<kind>": {…}}, {"method": …, "path": …}]}`` (spec.formats).
Whether an index sits behind an alias is known from the migrations themselves: the steps of every
file linted before this one in the catalog are replayed into ``source.state`` (see ``walk``).

Connected to the target (``lint_catalog(..., search=SearchApi)``), the rules also read the live
indices (``LiveIndices``, read only): a ``put_mapping`` is checked against the live mapping, and the
live document count and size turn a write freeze or a deletion into an estimated cost.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from polymigrate.adapters.elasticsearch.steps import mapping_conflicts, unwrap_mapping
from polymigrate.lint.jsonlines import first_key, item_lines
from polymigrate.lint.risk import STEPS
from polymigrate.lint.rule import Hit, Rule

_WRITE_PATH = re.compile(r"^/?(?P<index>[^/_][^/]*)/(?P<op>_doc|_create|_update|_bulk|_update_by_query|_delete_by_query)\b")
# Documents per second a reindex copies, deliberately low (small JVM, busy cluster): the point is to
# rank a freeze of a thousand documents apart from one of fifty million, not to predict to the second.
REINDEX_DOCS_PER_SECOND = 5_000
MB = 1024 * 1024


@dataclass
class LiveIndices:
    """The target's indices as they are now, read once per name through a ``SearchApi``."""

    api: Any
    _stats: dict = field(default_factory=dict)
    _props: dict = field(default_factory=dict)

    def stats(self, name: str) -> tuple[int, int] | None:
        """(documents, bytes) of the primaries of ``name`` (an index or every index behind an alias)."""
        if name not in self._stats:
            try:
                per = self.api.stats(name)
                self._stats[name] = (sum(v["docs"] for v in per.values()), sum(v["bytes"] for v in per.values()))
            except Exception:  # noqa: BLE001  absent (created later in this change set) or unreadable
                self._stats[name] = None
        return self._stats[name]

    def properties(self, name: str) -> dict[str, dict] | None:
        """index → its mapping's ``properties``, for ``name`` and the indices behind it; None if absent."""
        if name not in self._props:
            try:
                self._props[name] = {i: (m.get("mappings") or {}).get("properties") or {}
                                     for i, m in self.api.get_mapping(name).items()}
            except Exception:  # noqa: BLE001
                self._props[name] = None
        return self._props[name]


@dataclass
class EsState:
    """What the migrations so far did: mappings per index and the indices behind each alias."""

    mappings: dict[str, dict[str, str]] = field(default_factory=dict)
    aliases: dict[str, set[str]] = field(default_factory=dict)

    def behind(self, index: str) -> list[str]:
        return sorted(a for a, targets in self.aliases.items() if index in targets)

    def resolve(self, name: str) -> list[str]:
        return sorted(self.aliases[name]) if name in self.aliases else [name]


@dataclass
class Event:
    kind: str       # type_change | concrete_write | delete_behind_alias | delete | catch_up_unset | catch_up_none | freeze
    line: int
    text: str
    detail: str
    seconds: float | None = None  # estimated from the live index, when connected


def _props(mapping) -> dict[str, str]:
    if not isinstance(mapping, dict):
        return {}
    mapping = unwrap_mapping(mapping)
    props = mapping.get("properties") or (mapping.get("mappings") or {}).get("properties") or {}
    return {k: v.get("type", "object") for k, v in props.items() if isinstance(v, dict)}


def _switch(state: EsState, body: dict) -> None:
    alias = body.get("alias")
    if alias:
        targets = state.aliases.setdefault(alias, set())
        for old in [body.get("from")] if not isinstance(body.get("from"), list) else body["from"]:
            targets.discard(old)
        for new in [body.get("to")] if not isinstance(body.get("to"), list) else body["to"]:
            if new:
                targets.add(new)
    for action in body.get("actions") or []:
        for verb, spec in action.items():
            if isinstance(spec, dict) and spec.get("alias") and spec.get("index"):
                targets = state.aliases.setdefault(spec["alias"], set())
                (targets.add if verb == "add" else targets.discard)(spec["index"])


def _size(live: LiveIndices | None, name: str) -> tuple[str, float | None]:
    """' (~N docs, X MB live)' and the estimated copy seconds, when connected and the index exists."""
    stats = live.stats(name) if live is not None else None
    if stats is None:
        return "", None
    docs, size = stats
    seconds = docs / REINDEX_DOCS_PER_SECOND
    return f" ({docs:,} documents, {size / MB:,.1f} MB on the target: about {seconds:,.0f}s to copy)", seconds


def _blue_green(state: EsState, live: LiveIndices | None, body: dict, line: int, text: str) -> list[Event]:
    alias = body.get("alias")
    if not alias:
        return []
    events = []
    source = body.get("source") or next(iter(state.resolve(alias)), alias)
    cu = body.get("catch_up")
    size, seconds = _size(live, alias if source == alias else source)
    if cu is None:
        known = state.mappings.get(source, {}).get("@timestamp")
        if known is None and live is not None:
            props = live.properties(source) or {}
            known = next((p.get("@timestamp", {}).get("type") for p in props.values() if "@timestamp" in p), None)
        if known not in ("date", "date_nanos"):
            events.append(Event("catch_up_unset", line, text, f"{alias}{size}"))
    elif cu == "none":
        events.append(Event("catch_up_none", line, text, f"{alias}{size}"))
    elif cu == "freeze":
        events.append(Event("freeze", line, text, f"{alias}{size}", seconds))
    new = f"{alias}_v(next)"
    state.mappings[new] = _props((body.get("body") or {}).get("mappings"))
    state.aliases[alias] = {new}
    return events


def walk(src) -> list[Event]:
    """Replay one file's steps on the catalog's ES state; the events the rules report. Cached per file."""
    cache = src.state.setdefault("es_events", {})
    if src.file in cache:
        return cache[src.file]
    state: EsState = src.state.setdefault("es", EsState())
    live: LiveIndices | None = src.state.get("es_live")
    data = src.data
    steps = data.get("steps") if isinstance(data, dict) else None
    events: list[Event] = []
    if isinstance(steps, list):
        written = [s for s in steps if isinstance(s, dict)]
        keys = [first_key(s) for s in written]  # as in the file, for line numbers
        steps = [({"request": s} if "method" in s and "path" in s else s) for s in written]
        kinds = [first_key(s) for s in steps]
        reindexed = {(b.get("dest") if isinstance(b.get("dest"), str) else (b.get("dest") or {}).get("index"))
                     for s in steps for k, b in s.items() if k == "reindex" and isinstance(b, dict)}
        for line, kind, step in zip(item_lines(src.text, keys), kinds, steps):
            body = step.get(kind)
            if not isinstance(body, dict):
                continue
            text = f"{kind}: {str(body)[:140]}"
            index = body.get("index")
            if kind == "create_index" and index:
                state.mappings[index] = _props((body.get("body") or body).get("mappings"))
                for alias in ((body.get("body") or body).get("aliases") or {}):
                    state.aliases.setdefault(alias, set()).add(index)
            elif kind == "put_mapping" and index:
                new_props = unwrap_mapping(body.get("body") or body).get("properties") or {}
                changes: dict[str, str] = {}  # "index.field" -> what changes
                for target in state.resolve(index):
                    known = state.mappings.setdefault(target, {})
                    for name, new in _props(body.get("body") or body).items():
                        old = known.get(name)
                        if old and old != new and target not in reindexed:
                            changes[f"{target}.{name}"] = f"{old} → {new}"
                        known[name] = new
                for target, props in sorted(((live.properties(index) or {}) if live else {}).items()):
                    for c in mapping_conflicts(props, new_props):  # "field: type a → b" on the live index
                        where, _, what = c.partition(": ")
                        changes.setdefault(f"{target}.{where}", f"{what} (on the target)")
                events += [Event("type_change", line, text, f"{k}: {v}") for k, v in changes.items()]
            elif kind == "switch_alias":
                _switch(state, body)
            elif kind == "blue_green":
                events += _blue_green(state, live, body, line, text)
            elif kind == "delete_index" and index:
                aliases = state.behind(index)
                size, _ = _size(live, index)
                events.append(Event("delete_behind_alias" if aliases else "delete", line, text,
                                    (f"{index} (alias {', '.join(aliases)})" if aliases else index) + size,
                                    seconds=(live.stats(index) or (0, 0))[0] if live else None))
            elif kind == "request":
                method = str(body.get("method", "GET")).upper()
                path = str(body.get("path", ""))
                m = _WRITE_PATH.match(path)
                if m and method in ("POST", "PUT") and state.behind(m.group("index")):
                    events.append(Event("concrete_write", line, text,
                                        f"{m.group('index')} (alias {', '.join(state.behind(m.group('index')))})"))
                elif method == "DELETE" and re.match(r"^/?[^/_][^/]*/?$", path):
                    name = path.strip("/")
                    aliases = state.behind(name)
                    size, _ = _size(live, name)
                    events.append(Event("delete_behind_alias" if aliases else "delete", line, text,
                                        (f"{name} (alias {', '.join(aliases)})" if aliases else name) + size,
                                        seconds=(live.stats(name) or (0, 0))[0] if live else None))
    cache[src.file] = events
    return events


def _events(kind: str, message: str, severity=None):
    def check(src):
        if src.suffix != ".json":
            return
        for e in walk(src):
            if e.kind == kind:
                yield Hit(e.line, e.text, message.format(detail=e.detail), severity=severity(e) if severity else None)
    return check


def _freeze_level(e: Event) -> str | None:
    """Writes refused for the copy: the PostgreSQL scale for a lock that blocks writes (risk.STEPS)."""
    if e.seconds is None:
        return None
    medium, high, critical = STEPS["writes"]
    s = e.seconds
    return "critical" if s >= critical else "high" if s >= high else "medium" if s >= medium else "low"


def _delete_level(e: Event) -> str | None:
    """A deletion of an index that holds documents now is worse than one of an empty index."""
    if e.seconds is None:  # documents count, when connected
        return None
    return "medium" if e.seconds > 0 else "info"


RULES = (
    Rule("es-field-type-change-without-reindex", "elasticsearch", "high",
         "put_mapping cannot change an existing field's type or fixed parameters: the server rejects it",
         "use a blue_green step whose body has the new mapping (a new index, reindexed, switched atomically), "
         "or add a new field (e.g. a multi-field) instead",
         _events("type_change", "field change {detail} on an existing index without a reindex")),
    Rule("es-write-to-concrete-index", "elasticsearch", "medium",
         "writing to the concrete index behind an alias breaks the next blue-green switch",
         "write through the alias, so the next switch takes writers with it",
         _events("concrete_write", "writes go to concrete index {detail} instead of the alias")),
    Rule("es-delete-index-behind-alias", "elasticsearch", "critical",
         "deleting an index an alias still points to takes the alias's data away from readers",
         "switch the alias away first (blue_green), in an earlier migration; blue_green's retention deletes "
         "the old index after retain_days by itself",
         _events("delete_behind_alias", "deletes {detail}, which an alias still points to"), destructive=True),
    Rule("es-delete-index", "elasticsearch", "low", "delete_index loses the index's documents",
         "keep a snapshot, or suppress with the reason the data is no longer needed; an index a blue_green "
         "left behind is deleted by retention after retain_days",
         _events("delete", "deletes index {detail}", _delete_level), destructive=True),
    Rule("es-blue-green-catch-up-unset", "elasticsearch", "medium",
         "blue_green does not say how writes made during the copy reach the new index, and the source has no "
         "date @timestamp: the run stops before copying",
         "add \"catch_up\": {\"field\": \"updated_at\"} (a date or growing number every write sets), \"freeze\" "
         "(writes refused until the switch) or \"none\" (nothing writes to it)",
         _events("catch_up_unset", "blue_green on {detail} without catch_up")),
    Rule("es-blue-green-catch-up-none", "elasticsearch", "medium",
         "catch_up \"none\": updates written to the alias during the copy are lost at the switch (the count "
         "check only notices added or deleted documents)",
         "use catch_up {\"field\": …} or \"freeze\", or suppress with the reason nothing writes to this alias",
         _events("catch_up_none", "blue_green on {detail} assumes nothing writes during the copy")),
    Rule("es-blue-green-write-freeze", "elasticsearch", "medium",
         "catch_up \"freeze\" refuses every write to the alias (403 cluster_block_exception) until the switch",
         "prefer catch_up {\"field\": …} when writers stamp a date or version; otherwise schedule it where "
         "writers can retry for the copy's duration",
         _events("freeze", "writes to {detail} are refused for the whole copy", _freeze_level)),
)
