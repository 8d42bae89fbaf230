"""MongoDB: a declared state per collection (indexes, validator) → one ``.json`` command file.

Declared in ``<domain>/mongodb/schema/<collection>.yaml`` (docs/diff.md)::

    indexes:
      - name: author_recent
        key: {author.user_id: 1, created_at: -1}
      - {name: delivery_unique, key: {delivery_id: 1}, unique: true}
    validator: {$jsonSchema: {bsonType: object, required: [body]}}
    validationLevel: moderate

The current state is read through pymongo (``listCollections``, ``listIndexes``); the desired state
is a declared folder or another database's URL. What comes out is the project's own command-file
format (``create``, ``createIndexes``, ``dropIndexes``, ``collMod``) with its ``down``, so the
MongoDB adapter applies it and ``polymigrate undo`` reverts it.

Only declared collections are managed: a collection the declaration does not name is left alone
(never dropped). Within a collection the declaration is the whole truth: an index it does not list
is dropped, one whose key or options changed is dropped and built again (flagged: queries lose it
while it builds). Drops come before builds, so an index renamed with the same key never collides
with itself.

FerretDB (what ``make engines`` starts) stores no validator and ignores ``sparse``; what it cannot
run (``collMod``, TTL, partial, text or geo indexes, ``adapters.mongodb.server.unsupported``) is
not written into the file (the adapter would refuse the whole file) but returned as a refusal naming
the collection and the server, so the rest of the change still applies there.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from polymigrate.schemadiff import Generated, GeneratedFile, NamingContext
from polymigrate.schemadiff import declared as declared_files

# options an index can be declared with; the rest of listIndexes' answer (v, ns, background, the
# text and 2dsphere format versions the server picks) is not part of what the index is
INDEX_OPTIONS = ("unique", "sparse", "partialFilterExpression", "expireAfterSeconds", "collation", "hidden",
                 "weights", "default_language", "language_override", "wildcardProjection", "bits", "min", "max")
_FALSE_DEFAULTS = ("unique", "sparse", "hidden")  # false is the same as absent
# a text index as listIndexes shows it: what MongoDB fills in when the declaration says nothing
_TEXT_DEFAULTS = {"default_language": "english", "language_override": "language"}
LEDGER_PREFIX = "polymigrate_"  # the adapter's ledger and lock collections, never part of a schema


class IndexDecl(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(None, description="default: MongoDB's own (field_1_other_-1)")
    key: dict[str, int | str] = Field(min_length=1, description="field → 1, -1, 'text', '2dsphere', 'hashed'")
    unique: bool = False
    sparse: bool = False
    partialFilterExpression: dict[str, Any] | None = None
    expireAfterSeconds: int | None = Field(None, ge=0)
    collation: dict[str, Any] | None = None
    hidden: bool = False
    weights: dict[str, int] | None = None
    default_language: str | None = None
    language_override: str | None = None
    wildcardProjection: dict[str, Any] | None = None

    @field_validator("key")
    @classmethod
    def _directions(cls, v: dict[str, int | str]) -> dict[str, int | str]:
        for field, kind in v.items():
            if isinstance(kind, int) and kind not in (1, -1):
                raise ValueError(f"key {field!r}: {kind} is not a direction; use 1 (ascending) or -1 (descending)")
        return v

    def document(self) -> dict[str, Any]:
        """The index as ``createIndexes`` takes it, named as MongoDB would name it when unnamed."""
        from pymongo.operations import IndexModel  # the driver's own naming rule, not a copy of it

        opts = self.model_dump(by_alias=True, exclude_none=True, exclude={"name", "key"})
        doc = IndexModel(list(self.key.items()), **({"name": self.name} if self.name else {})).document
        return normal_index({"name": doc["name"], "key": dict(self.key), **opts})


class CollectionDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str = Field(min_length=1, description="default: the file's name without .yaml")
    indexes: list[IndexDecl] = Field(default_factory=list)
    validator: dict[str, Any] | None = None
    validationLevel: Literal["off", "strict", "moderate"] | None = None
    validationAction: Literal["error", "warn"] | None = None

    @field_validator("collection")
    @classmethod
    def _name(cls, v: str) -> str:
        if v.startswith("system.") or v.startswith(LEDGER_PREFIX) or "$" in v or "\0" in v:
            raise ValueError(f"{v!r} cannot be declared (system and polymigrate collections are not a schema)")
        return v

    @field_validator("indexes")
    @classmethod
    def _unique_names(cls, v: list[IndexDecl]) -> list[IndexDecl]:
        seen: set[str] = set()
        for ix in v:
            name = ix.document()["name"]
            if name == "_id_" or ix.key == {"_id": 1}:
                raise ValueError("the _id_ index exists on every collection; do not declare it")
            if name in seen:
                raise ValueError(f"two indexes are named {name!r}; name one of them")
            seen.add(name)
        return v

    def state(self) -> dict[str, Any]:
        return {"indexes": {d["name"]: d for d in (ix.document() for ix in self.indexes)},
                "validation": normal_validation(self.validator, self.validationLevel, self.validationAction)}


# --- normal forms: what two states are compared on -----------------------------------------------

def _plain(value: Any) -> Any:
    """BSON's SON, Int64 and friends as plain dicts, ints and floats (1 == 1.0, order kept)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    return value


def _text_key(key: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """listIndexes shows a text index's fields as ``_fts``/``_ftsx`` plus ``weights``; the key as
    declared has ``field: "text"`` where ``_fts`` stands (weights in the server's order)."""
    out: dict[str, Any] = {}
    for field, kind in key.items():
        if field == "_fts":
            out.update({w: "text" for w in weights})
        elif field != "_ftsx":
            out[field] = kind
    return out


def normal_index(doc: dict[str, Any]) -> dict[str, Any]:
    key = _plain(dict(doc["key"]))
    text = "_fts" in key or "text" in key.values()
    if "_fts" in key:
        key = _text_key(key, doc.get("weights") or {})
    if text:  # the text fields of one index are one _fts entry: their order means nothing
        items = list(key.items())
        texts = [i for i, (_, kind) in enumerate(items) if kind == "text"]
        key = dict(items[:texts[0]] + sorted(items[texts[0]:texts[-1] + 1]) + items[texts[-1] + 1:])
    out = {"name": doc["name"], "key": key}
    for option in INDEX_OPTIONS:
        value = doc.get(option)
        if value is None or (option in _FALSE_DEFAULTS and value is False):
            continue
        if text and (_TEXT_DEFAULTS.get(option) == value or
                     (option == "weights" and all(w == 1 for w in value.values()))):
            continue  # the server's defaults, written out by listIndexes
        out[option] = _plain(value)
    return out


def same_index(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal keys in the same order (a compound index's order is what it serves) and equal options.

    A collation is listed with every default written out (``strength``, ``caseLevel``, ``version`` …)
    while a declaration names a few: the keys both give must agree."""
    ca, cb = a.get("collation"), b.get("collation")
    if (ca is None) != (cb is None) or (ca and any(ca[k] != cb[k] for k in set(ca) & set(cb))):
        return False
    rest = ("key", "collation")
    return list(a["key"].items()) == list(b["key"].items()) and \
        {k: v for k, v in a.items() if k not in rest} == {k: v for k, v in b.items() if k not in rest}


def normal_validation(validator: dict | None, level: str | None, action: str | None) -> dict[str, Any]:
    """No validator is ``{}``; with one, MongoDB's defaults (strict, error) are written out."""
    if not validator:
        return {}
    return {"validator": _plain(validator), "validationLevel": level or "strict", "validationAction": action or "error"}


# --- reading states -------------------------------------------------------------------------------

def read_live(db: Any, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """collection → {indexes, validation} of a pymongo ``Database`` (only ``names`` when given; the
    system and polymigrate ledger collections never)."""
    out: dict[str, dict[str, Any]] = {}
    for info in db.list_collections():
        name = info["name"]
        if info.get("type", "collection") != "collection" or name.startswith("system.") or \
                name.startswith(LEDGER_PREFIX) or (names is not None and name not in names):
            continue
        opts = info.get("options") or {}
        indexes = {ix["name"]: normal_index(ix) for ix in db[name].list_indexes() if ix["name"] != "_id_"}
        out[name] = {"indexes": indexes,
                     "validation": normal_validation(opts.get("validator"), opts.get("validationLevel"),
                                                     opts.get("validationAction"))}
    return out


def read_declared(desired: str | Path) -> dict[str, dict[str, Any]]:
    folder = declared_files.schema_folder(desired, "mongodb")
    return {name: decl.state() for name, (decl, _) in declared_files.load(folder, CollectionDecl, "collection").items()}


# --- the diff ---------------------------------------------------------------------------------------

def _create_indexes(collection: str, indexes: list[dict], *, existing: bool) -> dict:
    # on an existing collection "background" keeps the lint rule quiet and is harmless (ignored on 4.2+)
    docs = [{**ix, "background": True} if existing else ix for ix in indexes]
    return {"createIndexes": collection, "indexes": docs}


def plan(current: dict[str, dict], desired: dict[str, dict], server: Any = None) -> tuple[list, list, list, list]:
    """(commands, down, notes, refusals) taking ``current`` to ``desired`` (states as ``read_live``
    gives them). ``server`` (``ServerInfo``) decides what is left out for FerretDB."""
    from polymigrate.adapters.mongodb.server import unsupported

    ferret = server is not None and server.is_ferretdb
    commands: list[dict] = []
    down: list[dict] = []
    notes: list[str] = []
    refusals: list[str] = []

    def lacks(cmd: dict) -> str | None:
        return unsupported(cmd, server) if server is not None else None

    def refuse(collection: str, what: str, problem: str) -> None:
        refusals.append(f"{collection}: {what} not generated: {problem} is not supported by {server.describe()} "
                        "(the adapter would refuse the whole file); diff against a real MongoDB (MONGO_URI) to "
                        "generate it")

    for name in sorted(desired):
        want, have = desired[name], current.get(name)
        want_ix = dict(want["indexes"])
        if ferret:
            for ix_name, ix in list(want_ix.items()):
                if ix.get("sparse") and not ix.get("unique"):
                    # FerretDB accepts sparse and drops it: the index it keeps is the non-sparse one
                    want_ix[ix_name] = {k: v for k, v in ix.items() if k != "sparse"}
                    notes.append(f"{name}.{ix_name}: sparse compared without it ({server.label} ignores sparse)")
        created = have is None
        undo: list[dict] = []  # in the order down runs: the reverse of what up does
        if created:
            create: dict[str, Any] = {"create": name}
            if want["validation"]:
                with_validator = {**create, **want["validation"]}
                problem = lacks(with_validator)
                if problem:
                    refuse(name, "validator", problem)
                else:
                    create = with_validator
            commands.append(create)
            undo.append({"drop": name})  # dropping what this file created undoes it all
            have = {"indexes": {}, "validation": {}}
        elif want["validation"] != have["validation"]:
            mod = {"collMod": name, **(want["validation"] or _NO_VALIDATOR)}
            problem = lacks(mod)
            if problem:
                refuse(name, "validator change", problem)
            else:
                commands.append(mod)
                undo.append({"collMod": name, **(have["validation"] or _NO_VALIDATOR)})
                notes.append(f"{name}: validator changed (collMod): a document that does not conform is refused "
                             "at its next write unless validationLevel is moderate")
        drops, builds = [], []
        for ix_name, ix in sorted(have["indexes"].items()):
            target = want_ix.get(ix_name)
            if target is None:
                drops.append(ix)
                notes.append(f"{name}.{ix_name}: dropped (not declared); queries that used it slow down")
            elif not same_index(ix, target):
                problem = lacks(_create_indexes(name, [target], existing=True))
                if problem:  # the old definition stays rather than the index vanishing
                    refuse(name, f"the change of index {ix_name}", problem)
                    continue
                drops.append(ix)
                builds.append(target)
                notes.append(f"{name}.{ix_name}: changed ({_index_change(ix, target)}): dropped and built again; "
                             "queries lose it while it builds")
        for ix_name, ix in want_ix.items():
            if ix_name in have["indexes"]:
                continue
            problem = lacks(_create_indexes(name, [ix], existing=not created))
            if problem:
                refuse(name, f"index {ix_name}", problem)
            else:
                builds.append(ix)
        commands += [{"dropIndexes": name, "index": ix["name"]} for ix in drops]
        if builds:
            commands.append(_create_indexes(name, builds, existing=not created))
        if not created:
            undo[:0] = [{"dropIndexes": name, "index": ix["name"]} for ix in reversed(builds)] + \
                ([_create_indexes(name, drops, existing=True)] if drops else [])
        down[:0] = undo
    return commands, down, notes, refusals


_NO_VALIDATOR = {"validator": {}, "validationLevel": "off"}


def _index_change(old: dict, new: dict) -> str:
    if list(old["key"].items()) != list(new["key"].items()):
        return f"key {json.dumps(old['key'])} → {json.dumps(new['key'])}"
    changed = sorted(k for k in set(old) | set(new) if k not in ("key", "name") and old.get(k) != new.get(k))
    return ", ".join(f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in changed)


def file_name(naming: NamingContext) -> str:
    """``{version}-{words}.json``, as ``polymigrate new`` names a MongoDB file."""
    words = "-".join(re.findall(r"[a-z0-9]+", naming.description.lower())) or "schema"
    return f"{naming.next_version}-{words}.json"


def _database(url: str) -> tuple[Any, Any]:
    import pymongo

    from polymigrate.connections import redact
    from polymigrate.errors import Problem, SpecError

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=10_000)
    try:
        db = client.get_default_database()
    except pymongo.errors.ConfigurationError:
        client.close()
        raise SpecError([Problem(redact(url), "names no database",
                                 hint="add the database to the URL: mongodb://host:27017/DATABASE")]) from None
    return client, db


def generate(current: str, desired: str | Path, *, naming: NamingContext) -> Generated:
    """The command file that takes the database at ``current`` (a mongodb:// URL with its database)
    to ``desired`` (a declared folder: the domain's, its ``mongodb/`` or ``mongodb/schema/``; or
    another database's URL). Empty when they already agree."""
    import pymongo

    from polymigrate.adapters.mongodb.server import classify, server_info
    from polymigrate.connections import redact

    url = current
    try:
        if isinstance(desired, str) and re.match(r"mongodb(\+srv)?://", desired):
            url = desired
            other, other_db = _database(desired)
            try:
                want = read_live(other_db)
            finally:
                other.close()
        else:
            want = read_declared(desired)
        url = current
        client, db = _database(current)
        try:
            server = server_info(client)
            have = read_live(db, list(want))
        finally:
            client.close()
    except pymongo.errors.PyMongoError as exc:
        raise classify(exc, what=f"reading {redact(url)}") from exc
    commands, down, notes, refusals = plan(have, want, server)
    out = Generated(refusals=refusals)
    if commands:
        phase = declared_files.phase_for(naming, "mongodb")
        if phase:
            notes.append(f"phase {phase}: the newest file's in {naming.folder} (phases follow versions; docs/phases.md)")
        doc = {**({"phase": phase} if phase else {}), "description": naming.description,
               "commands": _plain(commands), "down": _plain(down)}
        out.files.append(GeneratedFile(file_name(naming), declared_files.render(doc),
                                       notes=tuple(notes)))
    return out
