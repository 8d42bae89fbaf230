"""Elasticsearch / OpenSearch: a declared state per alias (mappings, settings) → one step file.

Declared in ``<domain>/elasticsearch/schema/<alias>.yaml`` (docs/diff.md)::

    settings: {number_of_shards: 1, number_of_replicas: 0, refresh_interval: 5s}
    mappings:
      dynamic: strict
      properties:
        sku: {type: keyword}
        name: {type: text, fields: {raw: {type: keyword, ignore_above: 256}}}
    blue_green:                    # how to reindex when a change needs one (the step's own keys)
      catch_up: {field: updated_at}

The current state is the index behind the alias, read through the adapter's REST seam (``SearchApi``).
What comes out is the project's step format, chosen by what the server can change in place:

* no alias yet: ``create_index`` ``<alias>_v<N>`` with the declared body, then ``switch_alias``;
* only additions (new fields, new multi-fields or sub-fields, a parameter the server updates in place
  such as ``ignore_above``, ``dynamic``, ``_meta``): ``put_mapping`` with the fields that changed;
* a dynamic setting changed or no longer declared: a settings update (``PUT /<alias>/_settings``, a
  raw request: there is no settings step; ``null`` resets a setting to its default);
* anything the server cannot change in place (a field's type, analyzer or other fixed parameter, a
  field or sub-field removed, a static setting such as ``number_of_shards`` or ``analysis``): one
  ``blue_green`` step whose body is the whole declaration, with the declared ``blue_green`` options.
  Every reason is in the file's notes.

Settings the server fills in itself (uuid, creation date, version, provided name, replication type)
are never compared; ``number_of_shards`` and ``number_of_replicas`` only when declared.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from polymigrate.schemadiff import Generated, GeneratedFile, NamingContext
from polymigrate.schemadiff import declared as declared_files

# filled in by the server (Elasticsearch sets the tier preference itself): never part of a declaration
INTERNAL_SETTINGS = ("index.creation_date", "index.uuid", "index.version.", "index.provided_name",
                     "index.replication.type", "index.history.uuid", "index.routing.allocation.initial_recovery.",
                     "index.resize.", "index.routing.allocation.include._tier_preference")
ALWAYS_PRESENT = ("index.number_of_shards", "index.number_of_replicas")
# settings fixed at creation or only changeable on a closed index (the index modules reference of
# Elasticsearch and OpenSearch): a new one means a new index
STATIC_SETTINGS = ("index.number_of_shards", "index.number_of_routing_shards", "index.codec",
                   "index.routing_partition_size", "index.soft_deletes.", "index.load_fixed_bitset_filters_eagerly",
                   "index.shard.check_on_startup", "index.analysis.", "index.sort.", "index.store.", "index.knn",
                   "index.similarity.", "index.mapping.source.", "index.remote_store.", "index.replication.")
# field parameters a put_mapping updates on an existing field; any other difference needs a reindex
UPDATABLE_PARAMS = frozenset({"ignore_above", "search_analyzer", "search_quote_analyzer", "dynamic", "meta",
                              "eager_global_ordinals", "ignore_malformed"})
UPDATABLE_TOP = frozenset({"dynamic", "_meta", "date_detection", "numeric_detection", "dynamic_templates",
                           "dynamic_date_formats"})


class AliasDecl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str = Field(description="default: the file's name without .yaml")
    settings: dict[str, Any] = Field(default_factory=dict)
    mappings: dict[str, Any] = Field(default_factory=dict)
    blue_green: dict[str, Any] = Field(default_factory=dict, description="options of the blue_green step a "
                                       "change that needs a reindex becomes (catch_up, verify, retain_days …)")

    @field_validator("alias")
    @classmethod
    def _alias(cls, v: str) -> str:
        from polymigrate.adapters.elasticsearch.api import check_index_name
        from polymigrate.errors import PermanentError

        try:
            return check_index_name(v, "alias")
        except PermanentError as exc:
            raise ValueError(f"{exc} ({exc.hint})") from None

    @field_validator("blue_green")
    @classmethod
    def _options(cls, v: dict[str, Any]) -> dict[str, Any]:
        from polymigrate.spec.formats import BlueGreen

        fixed = sorted(set(v) & {"alias", "body", "source"})
        if fixed:
            raise ValueError(f"{', '.join(fixed)} come from the declaration itself; remove them here")
        try:
            BlueGreen.model_validate({"alias": "a", **v})  # the step's own model: what it accepts, nothing else
        except ValidationError as exc:
            raise ValueError("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
        return v


# --- normal forms ---------------------------------------------------------------------------------

def _flatten(settings: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _setting(value: Any) -> Any:
    """As the server keeps settings: strings (booleans lower case), lists of strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return [_setting(v) for v in value]
    return None if value is None else str(value)


def flat_settings(settings: dict) -> dict[str, Any]:
    """``{"index": {"refresh_interval": "5s"}}``, ``{"refresh_interval": "5s"}`` and
    ``{"index.refresh_interval": "5s"}`` all as ``{"index.refresh_interval": "5s"}``."""
    return {(k if k.startswith("index.") else f"index.{k}"): _setting(v) for k, v in _flatten(settings).items()}


def _managed(key: str) -> bool:
    return not key.startswith(INTERNAL_SETTINGS)


def _static(key: str) -> bool:
    return key.startswith(STATIC_SETTINGS)


def _value(value: Any) -> Any:
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


def normal_field(spec: dict) -> dict:
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key in ("properties", "fields") and isinstance(value, dict):
            out[key] = {name: normal_field(sub) for name, sub in value.items() if isinstance(sub, dict)}
        elif key == "dynamic":
            out[key] = str(value).lower()
        else:
            out[key] = _value(value)
    if out.get("type") == "object" and "properties" in out:
        del out["type"]  # the server does not say "object" back
    return out


def normal_mapping(mappings: dict) -> dict:
    from polymigrate.adapters.elasticsearch.steps import unwrap_mapping

    out: dict[str, Any] = {}
    for key, value in (unwrap_mapping(mappings) or {}).items():
        if key == "properties":
            out[key] = {name: normal_field(spec) for name, spec in (value or {}).items()}
        elif key == "_meta":
            meta = {k: v for k, v in (value or {}).items() if k != "polymigrate"}  # blue_green's run marker
            if meta:
                out[key] = _value(meta)
        elif key == "dynamic":
            out[key] = str(value).lower()
        else:
            out[key] = _value(value)
    return out


# --- reading the current state ----------------------------------------------------------------------

def read_alias(api: Any, alias: str) -> dict[str, Any]:
    """``{"index", "settings" (flat, managed keys), "mappings" (normal)}`` of the one index behind
    ``alias``; ``{"missing": True}`` when there is no alias; ``{"problem": …}`` when it cannot be diffed."""
    targets = api.alias_targets(alias)
    if not targets:
        if api.exists(alias):
            return {"problem": f"{alias} is an index, not an alias: a declared state is reached through an alias "
                               f"(move readers to one first: docs/elasticsearch.md, blue_green)"}
        return {"missing": True}
    if len(targets) > 1:
        return {"problem": f"alias {alias} points to {len(targets)} indices ({', '.join(sorted(targets))}); a "
                           "declared state describes one index behind its alias"}
    index = next(iter(targets))
    settings = (api.get_settings(index).get(index) or {}).get("settings") or {}
    mappings = (api.get_mapping(index).get(index) or {}).get("mappings") or {}
    return {"index": index, "settings": {k: v for k, v in settings.items() if _managed(k)},
            "mappings": normal_mapping(mappings)}


# --- the diff ---------------------------------------------------------------------------------------

def _field_changes(path: str, live: dict, want: dict) -> list[str]:
    """Why ``live`` cannot become ``want`` in place (empty: a put_mapping can do it)."""
    reasons = []
    live_t = live.get("type") or ("object" if "properties" in live else None)
    want_t = want.get("type") or ("object" if "properties" in want else None)
    if live_t != want_t:
        return [f"{path}: type {live_t} → {want_t}"]
    for key in sorted((set(live) | set(want)) - {"properties", "fields", "type"}):
        if live.get(key) != want.get(key) and not (key in UPDATABLE_PARAMS and key in want):
            reasons.append(f"{path}: {key} {live.get(key)!r} → {want.get(key)!r}")
    for nest in ("properties", "fields"):
        have, wanted = live.get(nest) or {}, want.get(nest) or {}
        for name in sorted(set(have) - set(wanted)):
            reasons.append(f"{path}.{name}: removed (a field cannot be removed from an index)")
        for name in sorted(set(have) & set(wanted)):
            reasons += _field_changes(f"{path}.{name}", have[name], wanted[name])
    return reasons


def plan(alias: str, live: dict, decl: AliasDecl) -> tuple[list[dict], list[str], list[str]]:
    """(steps, notes, refusals) taking the alias's ``live`` state (``read_alias``) to ``decl``."""
    body = {k: v for k, v in (("settings", decl.settings), ("mappings", decl.mappings)) if v}
    if "problem" in live:
        return [], [], [live["problem"]]
    if live.get("missing"):
        index = f"{alias}_v{live.get('next', 1)}"
        return ([{"create_index": {"index": index, "body": body}},
                 {"switch_alias": {"alias": alias, "from": None, "to": index}}],
                [f"{alias}: created as {index} behind the new alias"], [])
    reindex: list[str] = []
    notes: list[str] = []
    from polymigrate.adapters.elasticsearch.steps import unwrap_mapping

    declared_props = unwrap_mapping(decl.mappings).get("properties") or {}  # a pre-7 type level dropped
    want_m, have_m = normal_mapping(decl.mappings), live["mappings"]
    put: dict[str, Any] = {}
    for key in sorted((set(want_m) | set(have_m)) - {"properties"}):
        if want_m.get(key) != have_m.get(key):
            if key in UPDATABLE_TOP and key in want_m:
                put[key] = unwrap_mapping(decl.mappings).get(key, want_m[key]) if key != "_meta" else want_m[key]
            else:
                reindex.append(f"mapping {key}: {have_m.get(key)!r} → {want_m.get(key)!r}")
    props: dict[str, Any] = {}
    have_p, want_p = have_m.get("properties") or {}, want_m.get("properties") or {}
    for name in sorted(set(have_p) - set(want_p)):
        reindex.append(f"{name}: removed (a field cannot be removed from an index)")
    for name, spec in want_p.items():
        if name not in have_p:
            props[name] = declared_props[name]
        elif spec != have_p[name]:
            why = _field_changes(name, have_p[name], spec)
            if why:
                reindex += why
            else:
                props[name] = declared_props[name]
    want_s = flat_settings(decl.settings)
    have_s = live["settings"]
    dynamic: dict[str, Any] = {}
    for key in sorted(set(want_s) | set(have_s)):
        if key in have_s and key not in want_s and key in ALWAYS_PRESENT:
            continue  # not declared: whatever the server chose is fine
        if want_s.get(key) == have_s.get(key):
            continue
        if _static(key):
            reindex.append(f"setting {key}: {have_s.get(key)!r} → {want_s.get(key)!r} (static: fixed when the "
                           "index is created)")
        else:
            dynamic[key] = want_s.get(key)  # None resets it to the server's default
    if reindex:
        options = dict(decl.blue_green)
        if "catch_up" not in options and not _date_timestamp(have_m):
            notes.append(f"{alias}: no blue_green.catch_up declared and {live['index']} maps no date @timestamp: "
                         "the step stops before copying; declare blue_green: {catch_up: {field: …}} (or freeze/none)")
        notes.append(f"{alias}: a new index by blue_green (reindex behind the alias, atomic switch, {live['index']} "
                     "retained) because " + "; ".join(reindex))
        if any("removed" in r for r in reindex) and want_m.get("dynamic") == "strict":
            notes.append(f"{alias}: documents that still carry a removed field fail the reindex under dynamic: "
                         "strict; add a blue_green.script that removes it")
        return [{"blue_green": {"alias": alias, "body": body, **options}}], notes, []
    steps: list[dict] = []
    if props or put:
        steps.append({"put_mapping": {"index": alias, "body": {**put, **({"properties": props} if props else {})}}})
        notes.append(f"{alias}: put_mapping of {', '.join(sorted(props) + sorted(put))} (additive, in place)")
    if dynamic:
        steps.append({"method": "PUT", "path": f"/{alias}/_settings", "body": dynamic})
        notes.append(f"{alias}: dynamic settings updated in place: {', '.join(sorted(dynamic))}")
    return steps, notes, []


def _date_timestamp(mapping: dict) -> bool:
    return ((mapping.get("properties") or {}).get("@timestamp") or {}).get("type") in ("date", "date_nanos")


def file_name(naming: NamingContext) -> str:
    """``{version}-{words}.json``, as ``polymigrate new`` names an Elasticsearch file."""
    words = "-".join(re.findall(r"[a-z0-9]+", naming.description.lower())) or "schema"
    return f"{naming.next_version}-{words}.json"


def generate(current: str, desired: str | Path, *, naming: NamingContext) -> Generated:
    """The step file that takes the aliases at ``current`` (an http(s)/opensearch/elasticsearch URL,
    as the CLI's ``--url`` takes it) to the declared folder ``desired`` (the domain's,
    its ``elasticsearch/`` or ``elasticsearch/schema/``). Empty when they already agree."""
    from polymigrate.adapters.elasticsearch.api import SearchApi, SearchError
    from polymigrate.adapters.elasticsearch.bluegreen import next_number
    from polymigrate.adapters.elasticsearch.steps import classify
    from polymigrate.connections import redact
    from polymigrate.errors import Problem, SpecError

    if isinstance(desired, str) and "://" in desired:
        raise SpecError([Problem(redact(desired), "is a URL; for Elasticsearch/OpenSearch the desired state is a "
                                 "declared folder", hint="pass the domain's folder, with elasticsearch/schema/<alias>.yaml")])
    folder = declared_files.schema_folder(desired, "elasticsearch")
    decls = declared_files.load(folder, AliasDecl, "alias")
    steps: list[dict] = []
    notes: list[str] = []
    refusals: list[str] = []
    try:
        api = SearchApi.from_url(current)
    except SearchError as exc:
        raise classify(exc)(f"reading {redact(current)}: {exc}") from exc
    try:
        for alias in sorted(decls):
            decl, path = decls[alias]
            live = read_alias(api, alias)
            if live.get("missing"):
                live["next"] = next_number(alias, list(api.indices(f"{alias}_v*")))
            s, n, r = plan(alias, live, decl)
            steps += s
            notes += n
            refusals += [f"{path}: {x}" for x in r]
    except SearchError as exc:
        raise classify(exc)(f"reading {redact(current)}: {exc}") from exc
    finally:
        api.close()
    out = Generated(refusals=refusals)
    if steps:
        phase = declared_files.phase_for(naming, "elasticsearch")
        if phase:
            notes.append(f"phase {phase}: the newest file's in {naming.folder} (phases follow versions; docs/phases.md)")
        doc = {**({"phase": phase} if phase else {}), "description": naming.description, "steps": steps}
        out.files.append(GeneratedFile(file_name(naming), declared_files.render(doc),
                                       notes=tuple(notes)))
    return out
