"""MongoDB: index builds, validator changes and unbounded multi-document writes.

JSON files are ``{"description": …, "commands": [<database command documents>]}``; .py and .js
files are read as text (the runtime calls ``up(db)``), so those checks are textual.
"""

from __future__ import annotations

import re

from polymigrate.lint.jsonlines import first_key, item_lines
from polymigrate.lint.rule import Hit, Rule


def _commands(src):
    """(line, command document) of a JSON migration; nothing for other files or bad JSON."""
    data = src.data
    cmds = data.get("commands") if isinstance(data, dict) else data if isinstance(data, list) else None
    if not isinstance(cmds, list):
        return []
    cmds = [c for c in cmds if isinstance(c, dict)]
    return list(zip(item_lines(src.text, [first_key(c) for c in cmds]), cmds))


def _short(cmd) -> str:
    return " ".join(f"{k}: {v}" for k, v in list(cmd.items())[:2])[:160]


_PY_INDEX = re.compile(r"\b(create_index|create_indexes|createIndex|createIndexes)\s*\(")


def _index_build(src):
    created = set()
    for line, cmd in _commands(src):
        if "create" in cmd:
            created.add(cmd["create"])
        coll = cmd.get("createIndexes")
        if coll is None or coll in created:
            continue
        for ix in cmd.get("indexes") or []:
            if isinstance(ix, dict) and not ix.get("background"):
                yield Hit(line, _short(cmd), f"index {ix.get('name', ix.get('key'))} on existing collection {coll} is "
                                             "built in the foreground: on a large collection it loads the primary and "
                                             "(before 4.2) blocks the collection")
    if src.suffix in (".py", ".js"):
        for m in _PY_INDEX.finditer(src.text):
            end = src.text.find("\n", m.end())
            call = src.text[m.start(): end if end > 0 else None]
            if "background" not in call:
                yield Hit(src.line_of(m.start()), call.strip()[:160], "index build without background on a collection "
                                                                       "that may be large")


def _validator(src):
    for line, cmd in _commands(src):
        if "collMod" in cmd and "validator" in cmd and cmd.get("validationLevel") != "moderate" \
                and cmd.get("validationAction") != "warn":
            level = cmd.get("validationLevel", "strict")
            yield Hit(line, _short(cmd), f"validator of {cmd['collMod']} changes with validationLevel {level}: "
                                         "updates to existing documents that do not match start failing")


_PY_MANY = re.compile(r"\b(update_many|updateMany|delete_many|deleteMany)\s*\(")
_BATCHED = re.compile(r"\.limit\s*\(|batch_size|batchSize|bulk_write|bulkWrite")


def _unbounded(src):
    for line, cmd in _commands(src):
        for verb, items, many in (("update", "updates", lambda u: u.get("multi")),
                                  ("delete", "deletes", lambda d: d.get("limit", 0) == 0)):
            if verb not in cmd:
                continue
            for op in cmd.get(items) or []:
                if isinstance(op, dict) and many(op) and not op.get("q") and not src.migration.directives.batch_size:
                    yield Hit(line, _short(cmd), f"{verb} of every document in {cmd[verb]} in one command: no "
                                                 "batching, one long write on the primary and a replication spike")
    if src.suffix in (".py", ".js") and not _BATCHED.search(src.text):
        for m in _PY_MANY.finditer(src.text):
            yield Hit(src.line_of(m.start()), src.text[m.start():src.text.find("\n", m.start())].strip()[:160],
                      f"{m.group(1)} without batching: one long write over the whole match")


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
         "a .py migration that loops find(filter).limit(batch_size) + bulk_write, selecting only unconverted documents",
         _unbounded),
)
