"""MongoDB: index builds, validator changes, whole-collection writes, drops and renames, and files
that are not migrations at all.

Only what ``up`` runs is linted (``mongo_source``): a JSON file's ``commands`` (not ``down``), the
``up`` of a ``.py`` file and of a migrate-mongo ``.js`` file, with the functions they call. When lint
is connected (``--url mongodb://…``), collection statistics score each finding by what it touches
(``mongo_stats``).
"""

from __future__ import annotations

import re

from polymigrate.lint.mongo_source import (bindings, collection_at, first_arg_is_empty, js_exports_up, json_commands,
                                            runs_text)
from polymigrate.lint.mongo_stats import level
from polymigrate.lint.rule import Hit, Rule


def _short(cmd) -> str:
    return " ".join(f"{k}: {v}" for k, v in list(cmd.items())[:2])[:160]


def _stats(src):
    return src.state.get("mongo_stats")


def _code(src):
    """(text up runs, line_of, statement at offset, collection at offset) for .py/.js files."""
    text, _ = runs_text(src)
    binds = bindings(text)

    def statement(offset: int) -> str:
        end = src.text.find("\n", offset)
        return src.text[offset:end if end > 0 else None].strip()[:160]

    return text, statement, lambda offset: collection_at(text, offset, binds)


def _created(src) -> set[str]:
    """Collections ``up`` creates itself (empty when later commands of the file touch them)."""
    if src.suffix == ".json":
        return {c["create"] for _, c in json_commands(src) if isinstance(c.get("create"), str)}
    text, _ = runs_text(src)
    return set(re.findall(r"(?:createCollection|create_collection)\(\s*['\"]([^'\"]+)['\"]", text))


def _scaled(src, collection, default, what):
    """(severity, note) of a finding on ``collection`` when connected; the default otherwise."""
    stats = _stats(src)
    if collection in _created(src):
        return "low", f" [{collection} is created by this file: empty]"
    if stats is None:
        return default, ""
    n = stats.count(collection)
    if n is None:
        return default, f" [on target: {collection} not found; scored as if large]"
    return level(n, default), f" [on target: {what} ~{n:,} documents of {collection}]"


# --- index builds ------------------------------------------------------------------------------

_INDEX = re.compile(r"\.\s*(create_index|create_indexes|createIndex|createIndexes)\s*\(")


def _index_build(src):
    for line, cmd in json_commands(src):
        coll = cmd.get("createIndexes")
        if coll is None or coll in _created(src):
            continue
        for ix in cmd.get("indexes") or []:
            if isinstance(ix, dict) and not ix.get("background"):
                sev, note = _scaled(src, coll, "medium", "builds over")
                yield Hit(line, _short(cmd), f"index {ix.get('name', ix.get('key'))} on existing collection {coll} is "
                                             "built in the foreground: on a large collection it loads the primary and "
                                             "(before 4.2) blocks the collection" + note, severity=sev)
    if src.suffix in (".py", ".js"):
        text, statement, coll_at = _code(src)
        for m in _INDEX.finditer(text):
            end = text.find(";" if src.suffix == ".js" else "\n", m.end())
            call = text[m.start(): end if end > 0 else None]
            coll = coll_at(m.start())
            if "background" in call or (coll and coll in _created(src)):
                continue
            sev, note = _scaled(src, coll, "medium", "builds over")
            yield Hit(src.line_of(m.start()), statement(m.start()),
                      f"index build on {coll or 'a collection'} without background, which may be large" + note,
                      severity=sev)


# --- validators --------------------------------------------------------------------------------

def _validator(src):
    stats = _stats(src)
    for line, cmd in json_commands(src):
        if "collMod" in cmd and "validator" in cmd and cmd.get("validationLevel") not in ("moderate", "off") \
                and cmd.get("validationAction") != "warn" and cmd.get("validator"):
            coll = cmd["collMod"]
            level_ = cmd.get("validationLevel", "strict")
            message = (f"validator of {coll} changes with validationLevel {level_} and validationAction error: "
                       "updates to existing documents that do not match start failing")
            sev = "medium"
            if stats is not None:
                bad = stats.nonconforming(coll, cmd["validator"])
                if bad == 0:
                    sev, message = "low", message + f" [on target: all ~{stats.count(coll) or 0:,} documents of {coll} conform]"
                elif bad:
                    sev, message = "high", message + f" [on target: {bad:,} documents of {coll} do not match]"
                else:
                    message += f" [on target: could not count non-conforming documents ({stats.describe(coll)})]"
            yield Hit(line, _short(cmd), message, severity=sev)
    if src.suffix in (".py", ".js"):
        text, statement, _ = _code(src)
        for m in re.finditer(r"['\"]?collMod['\"]?\s*[:,]", text):
            window = text[m.start(): m.start() + 2000]
            if "validator" in window and not re.search(r"moderate|['\"]warn['\"]|['\"]off['\"]", window):
                yield Hit(src.line_of(m.start()), statement(m.start()),
                          "collMod with a validator (strict, error) in code: existing documents that do not match "
                          "fail their next update")


# --- whole-collection writes ---------------------------------------------------------------------

_MANY = re.compile(r"\.\s*(update_many|updateMany|delete_many|deleteMany)\s*\(")
_BULK_MANY = re.compile(r"\b(updateMany|deleteMany)\s*:\s*\{\s*filter\s*:\s*\{\s*\}")


def _unbounded(src):
    for line, cmd in json_commands(src):
        for verb, items, many in (("update", "updates", lambda u: u.get("multi")),
                                  ("delete", "deletes", lambda d: d.get("limit", 0) == 0)):
            if verb not in cmd:
                continue
            for op in cmd.get(items) or []:
                if isinstance(op, dict) and many(op) and not op.get("q") and not src.migration.directives.batch_size:
                    sev, note = _scaled(src, cmd[verb], "high", f"{verb}s")
                    yield Hit(line, _short(cmd), f"{verb} of every document in {cmd[verb]} in one command: no "
                                                 "batching, one long write on the primary and a replication spike" + note,
                              severity=sev)
    if src.suffix in (".py", ".js"):
        text, statement, coll_at = _code(src)
        for m in _MANY.finditer(text):
            if first_arg_is_empty(text, m.end()):
                coll = coll_at(m.start())
                sev, note = _scaled(src, coll, "high", "writes")
                yield Hit(src.line_of(m.start()), statement(m.start()),
                          f"{m.group(1)}({{}}) changes every document of {coll or 'the collection'} in one command" + note,
                          severity=sev)
        for m in _BULK_MANY.finditer(text):
            coll = coll_at(text.rfind(".bulkWrite", 0, m.start()) + 1) if ".bulkWrite" in text[:m.start()] else None
            sev, note = _scaled(src, coll, "high", "writes")
            yield Hit(src.line_of(m.start()), statement(m.start()),
                      f"a bulkWrite {m.group(1)} with an empty filter changes every document in one command" + note,
                      severity=sev)


# --- drops and renames ------------------------------------------------------------------------------

_DROP = re.compile(r"\.\s*(drop|drop_collection|dropCollection|dropDatabase|drop_database)\s*\(")
_DROP_INDEX = re.compile(r"\.\s*(dropIndex|dropIndexes|drop_index|drop_indexes)\s*\(")
_RENAME = re.compile(r"\.\s*rename\s*\(")


def _calls(src, pattern):
    if src.suffix not in (".py", ".js"):
        return
    text, statement, coll_at = _code(src)
    for m in pattern.finditer(text):
        yield src.line_of(m.start()), statement(m.start()), m.group(1) if m.groups() else "rename", coll_at(m.start())


def _drop(src):
    for line, cmd in json_commands(src):
        name = next(iter(cmd), "")
        if name in ("drop", "dropDatabase"):
            yield Hit(line, _short(cmd), f"{name} {cmd[name] if name == 'drop' else ''} deletes its documents".replace("  ", " "))
    for line, stmt, verb, coll in _calls(src, _DROP):
        yield Hit(line, stmt, f"{verb}() of {coll or 'a collection'} deletes its documents")


def _drop_index(src):
    for line, cmd in json_commands(src):
        if "dropIndexes" in cmd:
            yield Hit(line, _short(cmd), f"dropIndexes on {cmd['dropIndexes']}: queries that used the index scan instead")
    for line, stmt, verb, coll in _calls(src, _DROP_INDEX):
        yield Hit(line, stmt, f"{verb}() on {coll or 'a collection'}: queries that used the index scan instead")


def _rename(src):
    for line, cmd in json_commands(src):
        if "renameCollection" in cmd:
            yield Hit(line, _short(cmd), f"renameCollection {cmd['renameCollection']} → {cmd.get('to')}: clients using "
                                         "the old name fail")
    for line, stmt, _verb, coll in _calls(src, _RENAME):
        yield Hit(line, stmt, f"rename of {coll or 'a collection'}: clients using the old name fail")


# --- not a migration ----------------------------------------------------------------------------------

def _no_up(src):
    if src.suffix == ".js" and not js_exports_up(src.text):
        yield Hit(1, "", "not a migrate-mongo migration: it exports no up(db, client), so running it does nothing "
                         "(or fails)")
    elif src.suffix == ".py" and not runs_text(src)[1]:
        yield Hit(1, "", "defines no up(db, ctx): running it fails")


RULES = (
    Rule("mongodb-index-without-background", "mongodb", "medium",
         "an index build on an existing, possibly large collection without background",
         'add "background": true (ignored but harmless on 4.2+), and build large indexes rolling, member by member',
         _index_build),
    Rule("mongodb-validator-change", "mongodb", "medium",
         "a collMod validator change applies to existing documents at the next update",
         'set "validationLevel": "moderate" (or "validationAction": "warn") until every document conforms',
         _validator),
    Rule("mongodb-unbounded-update", "mongodb", "high",
         "updateMany/deleteMany over a whole collection in one call",
         "a .py migration with ctx.transform(collection, filter, update): _id-ordered batches, checkpointed, throttled",
         _unbounded),
    Rule("mongodb-drop-collection", "mongodb", "high",
         "drop of a collection (or database) loses its documents and breaks clients",
         "expand/contract: stop using it in the application first, then drop it in a later release (and back it up)",
         _drop, destructive=True),
    Rule("mongodb-drop-index", "mongodb", "medium",
         "dropping an index makes the queries that used it scan the collection",
         "check no query uses it ($indexStats accesses.ops), hide it first (hidden: true via collMod), then drop it",
         _drop_index, destructive=True),
    Rule("mongodb-rename-collection", "mongodb", "medium",
         "renaming a collection breaks every client still using the old name",
         "expand/contract: write to both names (or a view) until every reader moved, then rename in a later release",
         _rename, destructive=True),
    Rule("mongodb-migration-without-up", "mongodb", "high",
         "a .js file that exports no up() (not migrate-mongo's format), or a .py file without up()",
         "export async up(db, client) (.js: module.exports = { async up(db, client) {…}, async down(db, client) {…} }) "
         "or def up(db, ctx) (.py)",
         _no_up),
)
