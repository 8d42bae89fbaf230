"""Data governance (docs/governance.md): personal-looking data without a label, labelled data copied
to a less protected place without its label, and regulated changes to labelled data.

The rules read the domain's labels from ``src.state["labels"]`` (a ``LabelIndex``, which
``lint_catalog(labels=…)`` shares across the domain's technologies). Without labels (a rule test, a
caller that knows no domain) they are silent. As they walk the files in order they record what is
inherited (an index over a labelled column, a column a backfill fills from one) and every
regulated change, which the approval reads (``LabelIndex.regulated``).
"""

from __future__ import annotations

import re
from typing import Iterator

from pglast import ast, enums

from polymigrate.catalog import Kind
from polymigrate.governance.labels import LabelIndex, Labelled
from polymigrate.governance.recognisers import Suggestion, by_name
from polymigrate.lint.jsonlines import first_key, item_lines
from polymigrate.lint.mongo_source import json_commands, runs_text
from polymigrate.lint.pgast import AT, alter_cmds, column_defs
from polymigrate.lint.rule import Hit, Rule

_OBJ = enums.ObjectType


def _labels(src) -> LabelIndex | None:
    return src.state.get("labels")


def _label_fix(key: str, s: Suggestion) -> str:
    return (f"label it in the domain's domain.yaml under labels: {s.label_yaml(key)} (or kind: public when it "
            "holds nothing personal), so lint, approval and the compliance report know what it holds")


def _suggest(src, technology: str, obj: str, line: int, statement: str, labels: LabelIndex) -> Iterator[Hit]:
    if labels.get(technology, obj) is not None:
        return
    s = by_name(obj)
    sampler = src.state.get("value_sampler")
    if s is None and sampler is not None and technology == "postgresql":
        s = sampler(obj)
    if s is not None:
        key = f"{technology}:{obj}"
        yield Hit(line, statement, f"{obj} looks like {s.what} ({s.kind}, from its {s.source}) and has no label",
                  fix=_label_fix(key, s))


# --- what each technology's file defines ------------------------------------------------------------

def _pg_columns(src) -> Iterator[tuple[object, str, str]]:
    """(statement, table, column) of every column the file defines or adds."""
    for stmt, col, _added in column_defs(src):
        node = stmt.node
        rel = node.relation if isinstance(node, (ast.CreateStmt, ast.AlterTableStmt)) else None
        if rel is not None:
            yield stmt, rel.relname, col.colname


def _column_refs(node) -> set[str]:
    """Column names an expression reads."""
    found: set[str] = set()

    def walk(n):
        if isinstance(n, ast.ColumnRef):
            parts = [f.sval for f in (n.fields or ()) if isinstance(f, ast.String)]
            if parts:
                found.add(parts[-1])
        if isinstance(n, ast.Node):
            for name in n:  # attribute names of the node
                walk(getattr(n, name))
        elif isinstance(n, (tuple, list)):
            for x in n:
                walk(x)

    walk(node)
    return found


def _json_lines(src, items: list, key_of) -> list[int]:
    return item_lines(src.text, [key_of(x) for x in items])


def _mongo_fields(src) -> Iterator[tuple[int, str, str]]:
    """(line, collection, field) of fields a JSON migration's validators and indexes name."""
    for line, cmd in json_commands(src):
        coll = cmd.get("create") or cmd.get("collMod") or cmd.get("createIndexes")
        if not isinstance(coll, str):
            continue
        schema = ((cmd.get("validator") or {}).get("$jsonSchema") or {}) if isinstance(cmd.get("validator"), dict) else {}
        for name in (schema.get("properties") or {}):
            yield line, coll, name
        for index in cmd.get("indexes") or ():
            for name in (index.get("key") or {}) if isinstance(index, dict) else ():
                yield line, coll, name


def _es_fields(src) -> Iterator[tuple[int, str, str]]:
    """(line, index or alias, field) of the mappings an Elasticsearch file creates."""
    data = src.data
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list):
        return
    steps = [s for s in steps if isinstance(s, dict)]
    for line, step in zip(item_lines(src.text, [first_key(s) for s in steps]), steps):
        for body in step.values():
            if not isinstance(body, dict):
                continue
            names = [n for n in (body.get("alias"), body.get("index"), body.get("name")) if isinstance(n, str)]
            inner = body.get("body") if isinstance(body.get("body"), dict) else body
            mapping = inner.get("mappings") or (inner.get("template") or {}).get("mappings") or {}
            for field in (mapping.get("properties") or {}) if isinstance(mapping, dict) else ():
                for n in names[:1]:
                    yield line, n, field


# --- personal-data-unlabelled -----------------------------------------------------------------------

def _unlabelled(src):
    labels = _labels(src)
    if labels is None or src.migration.kind is Kind.UNDO:
        return
    if src.technology == "postgresql":
        for stmt, table, column in _pg_columns(src):
            yield from _suggest(src, "postgresql", f"{table}.{column}", stmt.line, stmt.short, labels)
        yield from _backfilled(src, labels)
    elif src.technology == "mongodb" and src.suffix == ".json":
        for line, coll, name in _mongo_fields(src):
            yield from _suggest(src, "mongodb", f"{coll}.{name}", line, f"{coll}.{name}", labels)
    elif src.technology == "elasticsearch":
        for line, index, name in _es_fields(src):
            yield from _suggest(src, "elasticsearch", f"{index}.{name}", line, f"{index}.{name}", labels)


def _backfilled(src, labels: LabelIndex):
    """A backfill filling an unlabelled column from others: with ``lint --url``, a bounded sample of the
    source columns' values on the target says what the new column will hold (a card number in a
    column called ``legacy_ref`` has no telling name)."""
    sampler = src.state.get("value_sampler")
    if sampler is None:
        return
    for stmt in src.statements:
        node = stmt.node
        if not isinstance(node, ast.UpdateStmt) or node.relation is None:
            continue
        table = node.relation.relname
        for target in node.targetList or ():
            if not isinstance(target, ast.ResTarget) or not target.name or by_name(target.name) is not None:
                continue
            if labels.column(table, target.name) is not None:
                continue
            for col in sorted(_column_refs(target.val)):
                if labels.column(table, col) is not None:
                    continue  # labelled: label-not-carried decides about the copy
                s = sampler(f"{table}.{col}")
                if s is not None:
                    key = f"postgresql:{table}.{target.name}"
                    yield Hit(stmt.line, stmt.short, f"{table}.{target.name} is filled from {table}.{col}, whose "
                              f"{s.source} look like {s.what} ({s.kind}), and has no label", fix=_label_fix(key, s))
                    break


# --- label-not-carried -------------------------------------------------------------------------------

def _weaker(target: Labelled | None, source: Labelled) -> bool:
    return target is None or not target.label.at_least_as_protected_as(source.label)


def _not_carried_hit(line: int, statement: str, where: str, target_key: str, source: Labelled) -> Hit:
    return Hit(line, statement,
               f"{where} receives {source.key} ({source.label.kind}/{source.label.level}) without that label",
               fix=f"label {target_key} in domain.yaml with kind {source.label.kind} and level {source.label.level} "
                   "or higher (the copy is as sensitive as its source), or do not copy it there")


def _pg_copies(src, labels: LabelIndex):
    for stmt in src.statements:
        node = stmt.node
        if isinstance(node, ast.UpdateStmt) and node.relation is not None:
            table = node.relation.relname
            for target in node.targetList or ():
                if not isinstance(target, ast.ResTarget) or not target.name:
                    continue
                for col in sorted(_column_refs(target.val)):
                    source = labels.column(table, col)
                    if source is None or col == target.name:
                        continue
                    dest = labels.column(table, target.name)
                    if source.label.kind == "pci" and (dest is None or dest.derived_from) or \
                            dest is not None and not dest.derived_from and _weaker(dest, source):
                        # card data never spreads silently: PCI DSS scope is what is declared
                        yield _not_carried_hit(stmt.line, stmt.short, f"column {table}.{target.name}",
                                               f"postgresql:{table}.{target.name}", source)
                    else:
                        labels.inherit("postgresql", f"{table}.{target.name}", source)
        elif isinstance(node, ast.IndexStmt) and node.relation is not None and node.idxname:
            for elem in node.indexParams or ():
                source = labels.column(node.relation.relname, elem.name) if getattr(elem, "name", None) else None
                if source is not None:  # the index holds the column's values: it is labelled as the column
                    labels.inherit("postgresql", f"{node.relation.relname}.{node.idxname}", source)


_LUA_STRING = re.compile(r"""(['"])((?:\\.|(?!\1).)*)\1""")
_LUA_FIELD_SET = re.compile(r"\.\s*([A-Za-z_]\w*)\s*=(?!=)")
_KEYISH = re.compile(r"^[\w.-]+:[\w:*{}.-]*$")


def _redis_copies(src, labels: LabelIndex):
    code = "\n".join(line.split("--", 1)[0] for line in src.text.splitlines())  # Lua comments out, lines kept
    strings = [(m.start(), m.group(2)) for m in _LUA_STRING.finditer(code)]
    patterns = sorted({s for _, s in strings if _KEYISH.match(s)})
    written = [(m.start(), m.group(1)) for m in _LUA_FIELD_SET.finditer(code)] + strings
    seen = set()
    for offset, name in written:
        for source in labels.named(name):
            if (name, source.key) in seen:
                continue
            seen.add((name, source.key))
            where = [labels.get("redis", p.rstrip("*") + "*") or labels.get("redis", p) for p in patterns]
            if not patterns or any(_weaker(w, source) for w in where):
                keys = ", ".join(patterns) or "the keys it writes"
                line = src.line_of(offset)
                yield _not_carried_hit(line, f"line {line}: {name}", f"the Redis cache ({keys}) field '{name}'",
                                       f"redis:{patterns[0] if patterns else '<key pattern>'}", source)
    # a key built from labelled data (user_by_email:<address>) holds it in its very name
    for offset, pattern in strings:
        if not _KEYISH.match(pattern) or pattern in seen:
            continue
        seen.add(pattern)
        words = set(re.split(r"[^a-z0-9]+", pattern.lower()))
        for source in [x for x in labels.all() if x.technology != "redis" and x.label.level != "low"]:
            if source.name.lower() in words and _weaker(labels.get("redis", pattern), source):
                line = src.line_of(offset)
                yield _not_carried_hit(line, f"line {line}: {pattern}", f"the Redis key pattern {pattern}, built "
                                       f"from {source.name},", f"redis:{pattern}", source)
                break


def _field_copies(src, technology: str, fields, labels: LabelIndex):
    for line, container, name in fields:
        leaf = name.rsplit(".", 1)[-1]
        own = labels.get(technology, f"{container}.{name}")
        for source in labels.named(leaf):
            if source.technology == technology and source.object == f"{container}.{name}".lower():
                continue
            if _weaker(own, source):
                kind = "search index" if technology == "elasticsearch" else "collection"
                yield _not_carried_hit(line, f"{container}.{name}", f"the {kind} field {container}.{name}",
                                       f"{technology}:{container}.{name}", source)
                break


_TRANSFORM = re.compile(r"""\b(?:transform|collection)\(\s*['"]([\w.-]+)['"]""")
_SET = re.compile(r"""['"]\$set['"]\s*:\s*\{""")
_SET_KEY = re.compile(r"""['"]([A-Za-z_][\w.]*)['"]\s*:""")


def _transform_fields(src) -> Iterator[tuple[int, str, str]]:
    """(line, collection, field) a .py/.js transform's ``$set`` writes, when ``up`` works on one
    collection only (a helper building the update cannot be tied to a call otherwise)."""
    text, _ = runs_text(src)
    collections = set(_TRANSFORM.findall(text))
    if len(collections) != 1:
        return
    [coll] = collections
    for m in _SET.finditer(text):
        body = text[m.end():text.find("}", m.end())]
        for k in _SET_KEY.finditer(body):
            yield src.line_of(m.end() + k.start()), coll, k.group(1)


def _not_carried(src):
    labels = _labels(src)
    if labels is None or src.migration.kind is Kind.UNDO:
        return
    if src.technology == "postgresql":
        yield from _pg_copies(src, labels)
    elif src.technology == "redis":
        yield from _redis_copies(src, labels)
    elif src.technology == "elasticsearch":
        yield from _field_copies(src, "elasticsearch", _es_fields(src), labels)
    elif src.technology == "mongodb" and src.suffix == ".json":
        yield from _field_copies(src, "mongodb", _mongo_fields(src), labels)
    elif src.technology == "mongodb":
        yield from _field_copies(src, "mongodb", _transform_fields(src), labels)


# --- labelled-data-regulated-change -----------------------------------------------------------------

def _regulated_hit(src, labels: LabelIndex, line: int, statement: str, action: str, x: Labelled) -> Hit:
    labels.regulated.append({"file": src.file, "line": line, "technology": src.technology, "action": action,
                             "object": x.key, "kind": x.label.kind, "level": x.label.level})
    return Hit(line, statement, f"{action} labelled {x.key} ({x.label.kind}/{x.label.level}): a regulated change")


def _pg_regulated(src, labels: LabelIndex):
    for stmt, alter, cmd in alter_cmds(src):
        table = alter.relation.relname if alter.relation is not None else "?"
        action = {AT.AT_DropColumn: "drops", AT.AT_AlterColumnType: "retypes"}.get(cmd.subtype)
        x = labels.column(table, cmd.name) if action and cmd.name else None
        if x is not None:
            yield _regulated_hit(src, labels, stmt.line, stmt.short, action, x)
    for stmt in src.statements:
        node = stmt.node
        if isinstance(node, ast.RenameStmt) and node.renameType == _OBJ.OBJECT_COLUMN and node.relation is not None:
            x = labels.column(node.relation.relname, node.subname)
            if x is not None:
                yield _regulated_hit(src, labels, stmt.line, stmt.short, "renames", x)
        elif isinstance(node, ast.AlterObjectSchemaStmt) and node.objectType == _OBJ.OBJECT_TABLE \
                and node.relation is not None:
            for x in labels.table_columns(node.relation.relname):
                yield _regulated_hit(src, labels, stmt.line, stmt.short, f"moves (to schema {node.newschema})", x)
        elif isinstance(node, ast.DropStmt) and node.removeType == _OBJ.OBJECT_TABLE:
            for obj in node.objects or ():
                names = [n.sval for n in obj] if isinstance(obj, tuple) else []
                for x in labels.table_columns(names[-1]) if names else ():
                    yield _regulated_hit(src, labels, stmt.line, stmt.short, "drops (with its table)", x)


_UNSET = re.compile(r"""['"]\$(unset|rename)['"]\s*:\s*\{([^}]*)\}""")


def _mongo_regulated(src, labels: LabelIndex):
    text = runs_text(src)[0] if src.suffix in (".py", ".js") else src.text
    for m in _UNSET.finditer(text):
        for name in re.findall(r"""['"]([\w.]+)['"]\s*:""", m.group(2)):
            for x in labels.all():
                if x.technology == "mongodb" and x.object.split(".", 1)[-1] == name.lower():
                    line = src.line_of(m.start())
                    action = "removes" if m.group(1) == "unset" else "renames"
                    yield _regulated_hit(src, labels, line, f"line {line}: ${m.group(1)} {name}", action, x)
    if src.suffix == ".json":
        for line, cmd in json_commands(src):
            coll = cmd.get("drop") or cmd.get("renameCollection")
            if isinstance(coll, str):
                coll = coll.rsplit(".", 1)[-1] if "renameCollection" in cmd else coll
                for x in labels.all():
                    if x.technology == "mongodb" and x.object.split(".", 1)[0] == coll.lower():
                        action = "drops (with its collection)" if "drop" in cmd else "moves (renames its collection)"
                        yield _regulated_hit(src, labels, line, f"{first_key(cmd)}: {coll}", action, x)


def _regulated(src):
    labels = _labels(src)
    if labels is None:
        return
    if src.technology == "postgresql":
        yield from _pg_regulated(src, labels)
    elif src.technology == "mongodb":
        yield from _mongo_regulated(src, labels)


RULES = (
    Rule("personal-data-unlabelled", "any", "medium",
         "a new column or field looks personal (from its name, or its values with --url) and has no label",
         "label it in domain.yaml (labels: {'<technology>:<table>.<column>': {kind: pii, level: medium}}), "
         "or kind: public when it holds nothing personal", _unlabelled),
    Rule("label-not-carried", "any", "high",
         "labelled data is copied to a less protected place (a cache, a search index, another column for card "
         "data) that does not carry its label",
         "label the copy in domain.yaml as its source is labelled (same kind, same or higher level), or do not "
         "copy the data there", _not_carried),
    Rule("labelled-data-regulated-change", "any", "low",
         "a labelled column or field is dropped, retyped, renamed or moved: a regulated change",
         "nothing to fix: where the policy names compliance_roles, the approval also waits for a sign-off from "
         "one of them, recorded as such", _regulated),
)
