"""What a migration changed, as datasets: PostgreSQL tables and views, MongoDB collections,
Elasticsearch indices and aliases, Redis key patterns.

The names come from the files' own parse (pglast statements, the JSON command and step models,
the ``up`` part of a Python or JavaScript MongoDB file, the ``redis.call`` arguments of a Lua
script), never from comparing the server before and after: a dataset another client changed in
the meantime is not this migration's. The live snapshot after the run only adds each dataset's
fields (its schema after the change) and where it lives.

This module knows nothing of OpenLineage: the Airflow layer turns ``TargetLineage`` into its
events (``polymigrate_airflow.lineage``). Everything here is best effort by design: lineage must
never fail or slow down a migration that succeeded, so a file that cannot be read yields nothing.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from polymigrate.catalog import Migration


@dataclass(frozen=True)
class Changed:
    """One dataset a file changed: ``kind`` table | view | collection | index | alias | keys;
    ``action`` created | altered | written | renamed | dropped."""

    kind: str
    name: str
    action: str


@dataclass
class Dataset:
    """A changed dataset as lineage reports it: the name in its namespace, and its fields after the run."""

    name: str
    kind: str
    actions: list[str]
    fields: list[dict[str, str]] = field(default_factory=list)  # [{"name", "type"}], empty when unknown or dropped

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "actions": self.actions, "fields": self.fields}


@dataclass
class TargetLineage:
    """What one execute task changed on one target."""

    technology: str
    namespace: str               # e.g. postgres://host:5432 (OpenLineage's naming), never with credentials
    datasets: list[Dataset]
    versions: list[str]          # the applied files' versions (a repeatable: its script)
    scripts: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"technology": self.technology, "namespace": self.namespace, "versions": self.versions,
                "scripts": self.scripts, "datasets": [d.to_dict() for d in self.datasets]}


# --- per technology: what a file changed ------------------------------------------------------

def changed(migration: Migration, placeholders: dict[str, str] | None = None) -> list[Changed]:
    """The datasets ``migration`` changes, in file order, each once per action."""
    from polymigrate.lint.source import fill_placeholders, prepare

    try:
        if migration.technology == "postgresql":
            found = postgresql_changes(_pg_statements(fill_placeholders(migration.text, placeholders)))
        else:
            found = _READERS[migration.technology](prepare(migration, placeholders))
    except Exception:  # noqa: BLE001  lineage is best effort: an unreadable file reports nothing
        return []
    return list(dict.fromkeys(found))


def _pg_statements(text: str) -> list[tuple[str, dict]]:
    from pglast import parser

    return [next(iter(item["stmt"].items())) for item in json.loads(parser.parse_sql_json(text)).get("stmts", [])]


def _pg_name(rv: dict | None) -> str:
    """``schema.table`` of a RangeVar in pglast's JSON tree (just ``table`` without a schema)."""
    if not rv:
        return "?"
    return f"{rv['schemaname']}.{rv.get('relname')}" if rv.get("schemaname") else rv.get("relname", "?")


_PG_TABLE_OR_VIEW = {"OBJECT_TABLE": "table", "OBJECT_VIEW": "view", "OBJECT_MATVIEW": "view"}


def postgresql_changes(statements) -> list[Changed]:
    """What PostgreSQL statements change, from pglast's JSON tree: ``(node name, fields)`` per statement,
    as the adapter's own split already holds them (issue 24: one parse per applied file, not two).
    In file order; a dataset may repeat (``changed`` keeps each once per action)."""
    out: list[Changed] = []
    for node, f in statements:
        if node == "CreateStmt":
            out.append(Changed("table", _pg_name(f.get("relation")), "created"))
        elif node == "CreateTableAsStmt":
            kind = "view" if f.get("objtype") == "OBJECT_MATVIEW" else "table"
            out.append(Changed(kind, _pg_name((f.get("into") or {}).get("rel")), "created"))
        elif node == "ViewStmt":
            out.append(Changed("view", _pg_name(f.get("view")), "created"))
        elif node == "AlterTableStmt" and f.get("objtype") in _PG_TABLE_OR_VIEW:
            out.append(Changed(_PG_TABLE_OR_VIEW[f["objtype"]], _pg_name(f.get("relation")), "altered"))
        elif node == "IndexStmt":  # an index changes how its table is read and written
            out.append(Changed("table", _pg_name(f.get("relation")), "altered"))
        elif node == "DropStmt" and f.get("removeType") in _PG_TABLE_OR_VIEW:
            kind = _PG_TABLE_OR_VIEW[f["removeType"]]
            for obj in f.get("objects") or ():
                names = [x["String"]["sval"] for x in (obj.get("List") or {}).get("items", ()) if "String" in x]
                if names:
                    out.append(Changed(kind, ".".join(names[-2:]), "dropped"))
        elif node == "RenameStmt" and f.get("relation") and f.get("renameType") in (
                "OBJECT_TABLE", "OBJECT_COLUMN", "OBJECT_TABCONSTRAINT", "OBJECT_VIEW"):
            rv = f["relation"]
            if f["renameType"] in ("OBJECT_TABLE", "OBJECT_VIEW"):
                kind = _PG_TABLE_OR_VIEW[f["renameType"]]
                schema = rv.get("schemaname")
                out.append(Changed(kind, _pg_name(rv), "dropped"))
                out.append(Changed(kind, f"{schema}.{f.get('newname')}" if schema else f.get("newname", "?"), "renamed"))
            else:
                out.append(Changed("table", _pg_name(rv), "altered"))
        elif node in ("InsertStmt", "UpdateStmt", "DeleteStmt"):
            out.append(Changed("table", _pg_name(f.get("relation")), "written"))
        elif node == "TruncateStmt":
            out += [Changed("table", _pg_name(r.get("RangeVar")), "written") for r in f.get("relations") or ()]
    return out


# MongoDB commands (a .json file's ``commands``): the command name's value is the collection
_MONGO_ACTIONS = {"create": "created", "createIndexes": "altered", "dropIndexes": "altered", "collMod": "altered",
                  "drop": "dropped", "insert": "written", "update": "written", "delete": "written",
                  "findAndModify": "written"}
# calls in a .py/.js ``up`` and the action on the collection they are made on
_MONGO_CALLS = {
    "create_index": "altered", "create_indexes": "altered", "createIndex": "altered", "createIndexes": "altered",
    "drop_index": "altered", "drop_indexes": "altered", "dropIndex": "altered", "dropIndexes": "altered",
    "insert_one": "written", "insert_many": "written", "insertOne": "written", "insertMany": "written",
    "update_one": "written", "update_many": "written", "updateOne": "written", "updateMany": "written",
    "replace_one": "written", "replaceOne": "written", "delete_one": "written", "delete_many": "written",
    "deleteOne": "written", "deleteMany": "written", "bulk_write": "written", "bulkWrite": "written",
    "find_one_and_update": "written", "findOneAndUpdate": "written", "drop": "dropped", "rename": "renamed",
}
_MONGO_CALL = re.compile(r"\.\s*(" + "|".join(sorted(_MONGO_CALLS, key=len, reverse=True)) + r")\s*\(")
# ctx.transform("posts", …) / ctx.backfill('posts', …) and create_collection("x") / createCollection("x")
_MONGO_NAMED = re.compile(r"\b(?:ctx\.(?P<helper>transform|backfill)|(?P<create>create_collection|createCollection))"
                          r"\s*\(\s*(?:name\s*=\s*)?['\"](?P<name>[^'\"]+)['\"]")


def _mongodb(src) -> list[Changed]:
    from polymigrate.lint.mongo_source import bindings, collection_at, json_commands, runs_text

    if src.suffix == ".json":
        out = []
        for _line, cmd in json_commands(src):
            name, value = next(iter(cmd.items()), (None, None))
            if name == "renameCollection" and isinstance(value, str):
                out.append(Changed("collection", value.split(".", 1)[-1], "dropped"))
                to = cmd.get("to")
                if isinstance(to, str):
                    out.append(Changed("collection", to.split(".", 1)[-1], "renamed"))
            elif name in _MONGO_ACTIONS and isinstance(value, str):
                out.append(Changed("collection", value, _MONGO_ACTIONS[name]))
        return out
    text, _found = runs_text(src)
    binds = bindings(text)
    hits: list[tuple[int, Changed]] = []
    for m in _MONGO_NAMED.finditer(text):
        hits.append((m.start(), Changed("collection", m.group("name"), "created" if m.group("create") else "written")))
    for m in _MONGO_CALL.finditer(text):
        coll = collection_at(text, m.start(), binds)
        if coll:
            hits.append((m.start(), Changed("collection", coll, _MONGO_CALLS[m.group(1)])))
    return [c for _pos, c in sorted(hits, key=lambda h: h[0])]


def _elasticsearch(src) -> list[Changed]:
    from polymigrate.spec import formats

    out: list[Changed] = []
    for step in formats.parse("elasticsearch", src.text).steps:
        a = step.args
        if step.kind == "create_index":
            out.append(Changed("index", a.index, "created"))
            out += [Changed("alias", alias, "created") for alias in (a.body.get("aliases") or {})]
        elif step.kind == "put_mapping":
            out.append(Changed("index", a.index, "altered"))
        elif step.kind == "reindex":
            out.append(Changed("index", a.dest, "written"))
        elif step.kind == "switch_alias":
            out.append(Changed("alias", a.alias, "altered"))
        elif step.kind == "delete_index":
            out.append(Changed("index", a.index, "dropped"))
        elif step.kind == "blue_green":  # readers see the alias; the new index behind it is named at run time
            out.append(Changed("alias", a.alias, "altered"))
        elif step.kind == "request":
            from polymigrate.lint.rules.elasticsearch import _WRITE_PATH
            m = _WRITE_PATH.match(a.path)
            if m:
                out.append(Changed("index", m.group("index"), "written"))
    return out


# redis.call('CMD', args…) and pcall; the arguments end at the call's first ')' as in the lint
_REDIS_CALL = re.compile(r"redis\.p?call\s*\(\s*['\"](?P<cmd>[A-Za-z]+)['\"]\s*(?P<args>[^)]*)\)", re.S)
_LUA_STRING = re.compile(r"""^(['"])(.*)\1$""", re.S)
_READ_ONLY = frozenset({"GET", "MGET", "HGET", "HGETALL", "HMGET", "HKEYS", "HVALS", "HLEN", "HEXISTS", "EXISTS",
                        "TYPE", "TTL", "PTTL", "STRLEN", "LRANGE", "LLEN", "SMEMBERS", "SCARD", "SISMEMBER",
                        "ZRANGE", "ZSCORE", "ZCARD", "DUMP", "OBJECT", "MEMORY", "SCAN", "HSCAN", "SSCAN", "ZSCAN",
                        "XRANGE", "XLEN", "GETRANGE", "KEYS"})
_TWO_KEYS = frozenset({"RENAME", "RENAMENX", "COPY", "SMOVE", "LMOVE", "RPOPLPUSH", "BLMOVE"})


def _key_pattern(expr: str) -> str | None:
    """``prefix .. 'post_stats:' .. id`` → ``post_stats:*``: literal parts kept, the rest a ``*``;
    the leading prefix (``ARGV[3]`` or a variable holding it) is the domain's ``key_prefix``,
    added by the caller. None when the expression has no literal part (a key read from a SCAN)."""
    parts = [p.strip() for p in expr.split("..")]
    if not any(_LUA_STRING.match(p) for p in parts):
        return None
    if parts and not _LUA_STRING.match(parts[0]):
        parts = parts[1:]
    pattern = "".join(_LUA_STRING.match(p).group(2) if _LUA_STRING.match(p) else "*" for p in parts)
    return re.sub(r"\*+", "*", pattern) or None


def _redis(src) -> list[Changed]:
    """Key patterns a script writes: every literal-bearing key of a write command, and the ``MATCH``
    pattern of a ``SCAN`` when the script writes keys it got from the scan (a key held in a variable)."""
    out: list[Changed] = []
    scans: list[str] = []
    writes_scanned = False
    for m in _REDIS_CALL.finditer(src.text):
        cmd = m.group("cmd").upper()
        args = [a.strip() for a in m.group("args").lstrip(",").split(",") if a.strip()]
        if cmd == "SCAN":
            for i, a in enumerate(args[:-1]):
                if a.strip("'\"").upper() == "MATCH":
                    pattern = _key_pattern(args[i + 1])
                    if pattern:
                        scans.append(pattern)
            continue
        if cmd in _READ_ONLY or not args:
            continue
        for i, arg in enumerate(args[:2 if cmd in _TWO_KEYS else 1]):
            pattern = _key_pattern(arg)
            if pattern:
                out.append(Changed("keys", pattern, "renamed" if cmd in _TWO_KEYS and i == 1 else "written"))
            else:
                writes_scanned = True
    if writes_scanned:
        out = [Changed("keys", p, "written") for p in scans] + out
    return out


_READERS = {"mongodb": _mongodb, "elasticsearch": _elasticsearch, "redis": _redis}


# --- on a live target: names in their namespace, fields after the run --------------------------

_SCHEMES = {"postgresql": "postgres", "mongodb": "mongodb", "redis": "redis", "elasticsearch": "elasticsearch"}


def namespace(technology: str, target: str) -> str:
    """OpenLineage's ``scheme://host:port`` for an adapter's ``target`` text, without user or path."""
    url = next((t for t in target.split() if "://" in t), "")
    if not url:
        return f"{_SCHEMES[technology]}://unknown"
    host = urlsplit(url).netloc.rsplit("@", 1)[-1]
    return f"{_SCHEMES[technology]}://{host}"


def _pg_fields(columns: dict[str, Any]) -> list[dict[str, str]]:
    return [{"name": c, "type": str(info.get("type") or "")} for c, info in columns.items()]


def datasets(technology: str, changes: list[Changed], snapshot: dict[str, Any], target: str,
             settings: Any = None) -> list[Dataset]:
    """``changes`` named as OpenLineage names them, merged per dataset, with the fields ``snapshot``
    (the adapter's, taken after the run) shows for each."""
    merged: dict[str, Dataset] = {}  # by name: a materialized view indexed afterwards is one dataset

    def add(name: str, kind: str, action: str, fields: list[dict[str, str]]) -> None:
        d = merged.setdefault(name, Dataset(name, kind, [], fields))
        if action not in d.actions:
            d.actions.append(action)

    if technology == "postgresql":
        dbname = urlsplit(next((t for t in target.split() if "://" in t), "")).path.strip("/")
        schema = snapshot.get("schema") or "public"
        tables = snapshot.get("tables") or {}
        for c in changes:
            sch, _, rel = c.name.rpartition(".")
            rel = rel.strip('"')
            sch = sch or schema
            live = tables.get(rel) if sch == schema else None
            add(f"{dbname}.{sch}.{rel}", c.kind, c.action, _pg_fields(live["columns"]) if live else [])
    elif technology == "mongodb":
        db = snapshot.get("database") or ""
        colls = {c["name"]: c for c in snapshot.get("collections") or []}
        for c in changes:
            live = colls.get(c.name)
            add(f"{db}.{c.name}", c.kind, c.action, _mongo_fields(live) if live else [])
    elif technology == "elasticsearch":
        indices = snapshot.get("indices") or {}
        for c in changes:
            live = indices.get(c.name)
            if live is None and c.kind == "alias":  # the index the alias points to now carries its fields
                live = next((i for i in indices.values() if c.name in (i.get("aliases") or [])), None)
            add(c.name, c.kind, c.action, [{"name": f, "type": t} for f, t in (live or {}).get("fields", {}).items()])
    elif technology == "redis":
        prefix = snapshot.get("key_prefix") or getattr(settings, "key_prefix", None) or ""
        shapes = snapshot.get("shapes") or []
        for c in changes:
            pattern = prefix + c.name
            types = sorted({s["type"] for s in shapes if fnmatch.fnmatchcase(s["shape"], pattern)
                            or fnmatch.fnmatchcase(pattern, s["shape"])})
            add(pattern, c.kind, c.action, [{"name": "value", "type": t} for t in types])
    return list(merged.values())


def _mongo_fields(coll: dict[str, Any]) -> list[dict[str, str]]:
    """A collection's fields as its ``$jsonSchema`` validator declares them (MongoDB has no schema
    otherwise); each index as a field ``index:<name>`` so a new index shows in the schema."""
    schema = ((coll.get("options") or {}).get("validator") or {}).get("$jsonSchema") or {}
    out = []
    for name, spec in sorted((schema.get("properties") or {}).items()):
        kind = (spec.get("bsonType") or spec.get("type") or "") if isinstance(spec, dict) else ""
        out.append({"name": name, "type": json.dumps(kind) if isinstance(kind, list) else str(kind)})
    out += [{"name": f"index:{ix['name']}", "type": json.dumps(ix.get("key"), separators=(",", ":"))}
            for ix in coll.get("indexes") or []]
    return out


def of_target(adapter: Any, migrations: list[Migration], applied: list[dict[str, Any]],
              placeholders: dict[str, str] | None = None) -> TargetLineage | None:
    """What the files of ``applied`` (an execute's ``RunResult.applied``) changed on ``adapter``'s target,
    read after the run; None when nothing was applied."""
    if not applied:
        return None
    scripts = [a["script"] for a in applied]
    by_script = {m.script: m for m in migrations}
    changes = [c for s in scripts if s in by_script for c in changed(by_script[s], placeholders)]
    technology = adapter.technology
    # a Redis snapshot SCANs up to 100,000 keys for their types: too slow to pay after every run
    snapshot = adapter.snapshot() if changes and technology != "redis" else {}
    target = adapter.target
    return TargetLineage(technology, namespace(technology, target),
                         datasets(technology, changes, snapshot, target, adapter.settings),
                         [str(a["version"] or a["script"]) for a in applied], scripts)
