"""Elasticsearch: mapping type changes, writes that bypass aliases, deleting indices still in use.

Files are ``{"description": …, "steps": [{"create_index"|"put_mapping"|"put_index_template"|
"reindex"|"switch_alias"|"delete_index"|"request": {…}}]}``. Whether an index sits behind an alias
is only known from the migrations themselves: the steps of every file linted before this one in
the catalog are replayed into ``source.state`` (see ``walk``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from polymigrate.lint.jsonlines import first_key, item_lines
from polymigrate.lint.rule import Hit, Rule

_WRITE_PATH = re.compile(r"^/?(?P<index>[^/_][^/]*)/(?P<op>_doc|_create|_update|_bulk|_update_by_query|_delete_by_query)\b")


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
    kind: str       # type_change | concrete_write | delete_behind_alias | delete
    line: int
    text: str
    detail: str


def _props(mapping) -> dict[str, str]:
    if not isinstance(mapping, dict):
        return {}
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


def walk(src) -> list[Event]:
    """Replay one file's steps on the catalog's ES state; the events the rules report. Cached per file."""
    cache = src.state.setdefault("es_events", {})
    if src.file in cache:
        return cache[src.file]
    state: EsState = src.state.setdefault("es", EsState())
    data = src.data
    steps = data.get("steps") if isinstance(data, dict) else None
    events: list[Event] = []
    if isinstance(steps, list):
        steps = [s for s in steps if isinstance(s, dict)]
        kinds = [first_key(s) for s in steps]
        reindexed = {(b.get("dest") if isinstance(b.get("dest"), str) else (b.get("dest") or {}).get("index"))
                     for s in steps for k, b in s.items() if k == "reindex" and isinstance(b, dict)}
        for line, kind, step in zip(item_lines(src.text, kinds), kinds, steps):
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
                for target in state.resolve(index):
                    known = state.mappings.setdefault(target, {})
                    for name, new in _props(body.get("body") or body).items():
                        old = known.get(name)
                        if old and old != new and target not in reindexed:
                            events.append(Event("type_change", line, text, f"{target}.{name}: {old} → {new}"))
                        known[name] = new
            elif kind == "switch_alias":
                _switch(state, body)
            elif kind == "delete_index" and index:
                aliases = state.behind(index)
                events.append(Event("delete_behind_alias" if aliases else "delete", line, text,
                                    f"{index} (alias {', '.join(aliases)})" if aliases else index))
                state.mappings.pop(index, None)
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
                    events.append(Event("delete_behind_alias" if aliases else "delete", line, text,
                                        f"{name} (alias {', '.join(aliases)})" if aliases else name))
    cache[src.file] = events
    return events


def _events(kind: str, message: str):
    def check(src):
        if src.suffix != ".json":
            return
        for e in walk(src):
            if e.kind == kind:
                yield Hit(e.line, e.text, message.format(detail=e.detail))
    return check


RULES = (
    Rule("es-field-type-change-without-reindex", "elasticsearch", "high",
         "put_mapping cannot change an existing field's type: Elasticsearch rejects it",
         "create_index a new versioned index with the new mapping, reindex into it, then switch_alias",
         _events("type_change", "field type change {detail} on an existing index without a reindex")),
    Rule("es-write-to-concrete-index", "elasticsearch", "medium",
         "writing to the concrete index behind an alias breaks the next blue-green switch",
         "write through the alias, so the next switch_alias takes writers with it",
         _events("concrete_write", "writes go to concrete index {detail} instead of the alias")),
    Rule("es-delete-index-behind-alias", "elasticsearch", "critical",
         "deleting an index an alias still points to takes the alias's data away from readers",
         "switch_alias away from it first (in an earlier migration), then delete_index",
         _events("delete_behind_alias", "deletes {detail}, which an alias still points to"), destructive=True),
    Rule("es-delete-index", "elasticsearch", "low", "delete_index loses the index's documents",
         "keep a snapshot, or suppress with the reason the data is no longer needed",
         _events("delete", "deletes index {detail}"), destructive=True),
)
