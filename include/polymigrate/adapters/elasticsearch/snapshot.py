"""What a drift check compares on a search target: its indices' fields and aliases and its templates
(the same shape ``polymigrate.snapshot_diff`` reads from every technology)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from polymigrate.adapters.elasticsearch.api import SearchApi, SearchError


def snapshot(api: SearchApi, index_prefix: str) -> dict[str, Any]:
    """Indices under ``index_prefix`` (hidden ones left out) with their fields and aliases, and the
    index/component templates under the same prefix, each as a short hash of its definition."""
    pattern = f"{index_prefix}*"
    mappings = api.request("GET", f"/{pattern}/_mapping", params={"expand_wildcards": "open"})
    aliases = api.indices(pattern)
    indices = {}
    for name, m in sorted(mappings.items()):
        if name.startswith("."):
            continue
        mp = m.get("mappings") or {}
        indices[name] = {"fields": _fields(mp.get("properties") or {}), "dynamic": mp.get("dynamic"),
                         "aliases": sorted((aliases.get(name) or {}).get("aliases") or {})}
    out: dict[str, Any] = {"server": api.server.label, "indices": indices}
    for kind, path, key in (("index_templates", "_index_template", "index_templates"),
                            ("component_templates", "_component_template", "component_templates")):
        try:
            found = api.request("GET", f"/{path}/{pattern}").get(key) or []
        except SearchError as exc:
            if exc.status != 404:
                raise
            found = []
        out[kind] = {t["name"]: hashlib.sha256(json.dumps(t, sort_keys=True).encode()).hexdigest()[:16]
                     for t in found}
    return out


def _fields(props: dict, prefix: str = "") -> dict[str, str]:
    # multi-fields (``fields``) and objects (``properties``) both flatten to dotted names
    out = {}
    for name, spec in sorted(props.items()):
        if not isinstance(spec, dict):
            continue
        out[prefix + name] = spec.get("type") or "object"
        out.update(_fields(spec.get("properties") or {}, prefix + name + "."))
        out.update(_fields(spec.get("fields") or {}, prefix + name + "."))
    return out
