"""Drift: what changed on a target since the snapshot recorded after its last successful run.

Pure functions over the JSON-able snapshots the adapters take (``Adapter.snapshot``), shared by the
nightly ``drift__<environment>`` DAG, the approval summary and the audit page:

* ``comparable`` reduces a snapshot to what a person changes by hand (schema, not data: a Redis key
  shape's count moves every second, whether its keys carry a TTL does not);
* ``diff`` lists the differences, one per object (``indexes.orders_note``,
  ``tables.orders.columns.note``), each added, removed or changed with before and after;
* ``allowed`` applies the domain's allowlist (``drift.allow`` in domain.yaml);
* ``carry_since`` keeps the first night a difference was seen, so a report says since when.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any

MAX_DIFFERENCES = 200  # in one event; the count says how many there were
VALUE_CAP = 500        # characters of a before/after value kept in an event


@dataclass(frozen=True)
class Difference:
    technology: str
    region: str
    object: str          # path in the snapshot: "indexes.orders_note", "tables.orders.columns.note"
    change: str          # added | removed | changed
    before: Any = None
    after: Any = None
    since: str | None = None  # ISO time of the first report that showed it (this one, if new)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.region, self.technology, self.object, self.change)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("before", "after"):  # an added table's whole definition would bloat the audit event
            if d[k] is not None and len(json.dumps(d[k], default=str)) > VALUE_CAP:
                d[k] = short(d[k], VALUE_CAP)
        return d

    def __str__(self) -> str:
        what = {"added": f"added: {short(self.after)}", "removed": f"removed (was {short(self.before)})",
                "changed": f"{short(self.before)} → {short(self.after)}"}[self.change]
        return f"{self.region}/{self.technology} {self.object} {what}" + (f" (since {self.since[:16]})" if self.since else "")


def short(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def fingerprint(snapshot: dict[str, Any]) -> str:
    """A stable hash of a snapshot: equal snapshots, equal fingerprints."""
    return hashlib.sha256(json.dumps(snapshot, sort_keys=True, default=str).encode()).hexdigest()


def comparable(technology: str, snapshot: dict[str, Any]) -> dict[str, Any]:
    """What drift compares: the schema objects, keyed by name, without server labels or data volumes."""
    snap = {k: v for k, v in snapshot.items() if k not in ("server", "sampled_keys", "truncated")}
    if technology == "mongodb":
        snap["collections"] = {c["name"]: {**{k: v for k, v in c.items() if k not in ("name", "indexes")},
                                           "indexes": {i["name"]: i for i in c.get("indexes") or []}}
                               for c in snapshot.get("collections") or []}
    elif technology == "redis":
        snap["shapes"] = {f"{s['shape']} ({s['type']})": {"ttl": _ttl_share(s)} for s in snapshot.get("shapes") or []}
    return snap


def _ttl_share(shape: dict[str, Any]) -> str:
    count, with_ttl = int(shape.get("count") or 0), int(shape.get("with_ttl") or 0)
    return "all keys expire" if with_ttl >= count else "no key expires" if with_ttl == 0 else "some keys expire"


def diff(technology: str, region: str, before: dict[str, Any], after: dict[str, Any]) -> list[Difference]:
    """Every object added, removed or changed between two snapshots of one target."""
    out: list[Difference] = []
    _walk(comparable(technology, before), comparable(technology, after), [], technology, region, out)
    return out


def _walk(a: Any, b: Any, path: list[str], tech: str, region: str, out: list[Difference]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            here = path + [str(k)]
            if k not in a:
                out.append(Difference(tech, region, ".".join(here), "added", after=b[k]))
            elif k not in b:
                out.append(Difference(tech, region, ".".join(here), "removed", before=a[k]))
            else:
                _walk(a[k], b[k], here, tech, region, out)
    elif a != b:
        out.append(Difference(tech, region, ".".join(path) or "(snapshot)", "changed", before=a, after=b))


def allowed(difference: Difference, patterns: list[str]) -> bool:
    """The difference is on an allowlisted object (or inside one: allowing ``tables.scratch`` allows
    its columns too). Patterns are fnmatch over ``<technology>:<object>`` or just ``<object>``."""
    parts = difference.object.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for p in patterns:
        tech, sep, obj = p.partition(":")
        if sep and tech != difference.technology:
            continue
        pattern = obj if sep else p
        if any(fnmatchcase(prefix, pattern) for prefix in prefixes):
            return True
    return False


def carry_since(differences: list[Difference], previous: list[dict[str, Any]], now: str) -> list[Difference]:
    """Each difference with the time it was first reported: from the previous report when it showed
    the same object and change already, otherwise ``now``."""
    seen = {(d.get("region"), d.get("technology"), d.get("object"), d.get("change")): d.get("since") for d in previous}
    out = []
    for d in differences:
        since = seen.get(d.key) or now
        out.append(Difference(d.technology, d.region, d.object, d.change, d.before, d.after, since))
    return out
