"""What ``MongoAdapter`` reads back of a database: its snapshot (drift), the expectation suites and
the verify step's checks (indexes as the files declare them)."""

from __future__ import annotations

import logging
from typing import Any

from bson import json_util
from pymongo import errors as perr

from polymigrate.adapters.base import Check
from polymigrate.adapters.mongodb.server import classify
from polymigrate.catalog import Kind, Migration
from polymigrate.ledger import RunContext, Status

log = logging.getLogger("polymigrate.mongo")


class MongoChecks:
    """Part of ``MongoAdapter``: what it reads back of the database (snapshot, expectations, checks)."""

    def snapshot(self) -> dict[str, Any]:
        """Collections (not polymigrate's own) with their options and indexes: schema, not data."""
        self._ensure()
        own = {self.ledger.name, self.ledger.lock_collection.name}
        out = []
        try:
            for info in sorted(self.db.list_collections(), key=lambda c: c["name"]):
                name = info["name"]
                if name in own or name.startswith("system."):
                    continue
                indexes = []
                if info.get("type", "collection") == "collection":
                    for ix in self.db[name].list_indexes():
                        d = dict(ix)
                        indexes.append({k: json_util.loads(json_util.dumps(d[k])) for k in
                                        ("name", "key", "unique", "sparse", "expireAfterSeconds",
                                         "partialFilterExpression", "collation", "hidden") if k in d})
                indexes.sort(key=lambda i: i["name"])
                options = json_util.loads(json_util.dumps(info.get("options") or {}))
                out.append({"name": name, "type": info.get("type", "collection"), "options": options,
                            "indexes": indexes})
        except perr.PyMongoError as exc:
            raise classify(exc, server=self.server, what="cannot read the schema") from exc
        return {"database": self.db.name, "server": self.server.label, "collections": out}

    def run_expectations(self, suites: list[Any]) -> list[Check]:
        """The suites' expectations as server-side counts on the domain's database
        (``polymigrate.expectations``: the documented subset, up to 5 example values read)."""
        from polymigrate.expectations import MongoProbe, run_document_suites

        try:
            outcomes = run_document_suites(suites, MongoProbe(self.db))
        except perr.PyMongoError as exc:
            raise classify(exc, server=self.server, what="the expectation suites could not run") from exc
        return self._expectation_checks(outcomes)

    def health_checks(self, ctx: RunContext, migrations: list[Migration]) -> list[Check]:
        """Every index the applied ``.json`` files declare (``createIndexes`` net of later
        ``dropIndexes``/``drop``) is there, with the declared key. Transforms (``.py``/``.js``) declare
        no index and are not read."""
        done = {e.script for e in self.read_ledger() if e.status in (Status.SUCCESS, Status.BASELINE)}
        commands: list[dict] = []
        for m in migrations:
            if m.script in done and m.path.suffix == ".json" and m.kind is Kind.VERSIONED:
                data = json_util.loads(m.render(ctx.placeholders))
                commands += [c for c in (data.get("commands") or []) if isinstance(c, dict)]
        declared = declared_indexes(commands)
        problems: list[str] = []
        try:
            present: dict[str, dict[str, Any]] = {}
            for coll in sorted({c for c, _ in declared}):
                present[coll] = {ix["name"]: dict(ix["key"]) for ix in self.db[coll].list_indexes()}
        except perr.PyMongoError as exc:
            raise classify(exc, server=self.server, what="cannot list the indexes") from exc
        for (coll, name), key in sorted(declared.items()):
            have = present.get(coll, {}).get(name)
            if have is None:
                problems.append(f"{coll}.{name} missing")
            elif key is not None and list(have.items()) != list(key.items()):
                problems.append(f"{coll}.{name} has key {have}, declared {key}")
        return [Check("declared indexes", not problems, technology=self.technology, detail=(
            f"{len(problems)} of {len(declared)} declared index(es) not as declared: " + "; ".join(problems)
            + " (dropped or changed by hand? create it again in a new migration)" if problems
            else f"{len(declared)} declared index(es) present"))]


def declared_indexes(commands: list[dict]) -> dict[tuple[str, str], dict | None]:
    """``(collection, index name) -> key`` after running ``commands`` in order: what the files declare
    should exist. A ``dropIndexes`` of ``*`` keeps only ``_id_``, which is never declared."""
    out: dict[tuple[str, str], dict | None] = {}
    for cmd in commands:
        verb = next(iter(cmd), None)
        coll = cmd.get(verb) if verb else None
        if not isinstance(coll, str):
            continue
        if verb == "createIndexes":
            for ix in cmd.get("indexes") or []:
                if isinstance(ix, dict) and ix.get("name"):
                    out[(coll, ix["name"])] = dict(ix["key"]) if isinstance(ix.get("key"), dict) else None
        elif verb == "dropIndexes":
            which = cmd.get("index")
            names = which if isinstance(which, list) else [which]
            for k in [k for k in out if k[0] == coll]:
                if which == "*" or k[1] in names or (isinstance(which, dict) and out[k] == which):
                    del out[k]
        elif verb == "drop":
            for k in [k for k in out if k[0] == coll]:
                del out[k]
        elif verb == "renameCollection":
            to = str(cmd.get("to") or "").split(".", 1)[-1]
            for k in [k for k in out if k[0] == coll.split(".", 1)[-1]]:
                out[(to, k[1])] = out.pop(k)
    return out
