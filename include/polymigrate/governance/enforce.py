"""Residency at plan and retention at verify and drift (docs/governance.md).

* Residency: a region's policy may forbid label kinds (``policy.residency``); a plan whose pending
  files in that region touch such labelled data is refused, naming the rule, the label and the region.
* Retention: a label's ``retention`` must be enforced by something real on the target: a TTL index or
  a time-series expiry (MongoDB), key TTLs (Redis), an ISM/ILM policy (OpenSearch/Elasticsearch), a
  declared purge function (PostgreSQL). ``retention_checks`` proves it as verify checks; drift runs
  the same checks nightly, so an index dropped by hand is reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polymigrate.adapters.base import Check
from polymigrate.governance.labels import LabelIndex, Labelled

REDIS_SCAN_CAP = 1000  # keys looked at per pattern: a bounded sample, never a walk over the whole keyspace


@dataclass(frozen=True)
class ResidencyViolation:
    rule: str
    label: str
    kind: str
    region: str
    script: str
    technology: str
    reason: str = ""

    def __str__(self) -> str:
        return (f"residency rule '{self.rule}' forbids {self.kind} data in region {self.region}: "
                f"{self.technology} {self.script} touches {self.label}" + (f" ({self.reason})" if self.reason else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "label": self.label, "kind": self.kind, "region": self.region,
                "script": self.script, "technology": self.technology}


def residency_violations(environment, labels: LabelIndex, pending: dict[tuple[str, str], list]) -> list[ResidencyViolation]:
    """``pending``: (region, technology) → the migrations a plan would apply there."""
    out = []
    for (region, technology), migrations in sorted(pending.items()):
        spec = environment.regions.get(region)
        rules = [r for r in environment.policy.residency
                 if r.applies_to(region, list(spec.jurisdictions) if spec else [])]
        if not rules:
            continue
        for m in migrations:
            for x in labels.touched_by(technology, m.text):
                for rule in rules:
                    if x.label.kind in rule.forbid:
                        out.append(ResidencyViolation(rule.name, x.key, x.label.kind, region, m.script, technology,
                                                      rule.reason))
    return out


def regulations(kind: str, jurisdictions: list[str]) -> list[str]:
    """The regulations a label kind falls under in a region: PCI DSS for card data anywhere, the
    region's data-protection regimes (GDPR, POPIA …) for personal and card data."""
    found = ["PCI DSS"] if kind == "pci" else []
    if kind in ("pii", "pci"):
        found += list(jurisdictions)
    return found


# --- retention --------------------------------------------------------------------------------------

def _name(x: Labelled) -> str:
    return f"retention {x.key}"


def _mongo(adapter, x: Labelled, days: int) -> Check:
    coll = x.object.split(".", 1)[0]
    db = adapter.db
    info = next(iter(db.list_collections(filter={"name": coll})), None)
    if info is None:
        return Check(_name(x), False, f"collection {coll} not found, so nothing expires its documents", "mongodb")
    limit = days * 86400
    expiry = (info.get("options") or {}).get("expireAfterSeconds")
    if isinstance(expiry, (int, float)) and 0 <= expiry <= limit:
        return Check(_name(x), True, f"time-series expiry after {int(expiry)} s (limit {days} d)", "mongodb")
    ttl = [(i["name"], i["expireAfterSeconds"]) for i in db[coll].list_indexes() if "expireAfterSeconds" in i]
    good = [(n, s) for n, s in ttl if s <= limit]
    if good:
        return Check(_name(x), True, f"TTL index {good[0][0]} expires after {int(good[0][1])} s (limit {days} d)",
                     "mongodb")
    found = (f"TTL index(es) {', '.join(f'{n} ({int(s)} s)' for n, s in ttl)} keep documents longer than"
             if ttl else "no TTL index enforces")
    return Check(_name(x), False, f"{coll}: {found} the label's {x.label.retention}; create a TTL index "
                 f"(expireAfterSeconds ≤ {limit}) in a migration", "mongodb")


def _redis(adapter, x: Labelled, days: int) -> Check:
    pattern = adapter.key_prefix + x.object
    client, limit = adapter.client, days * 86400
    looked, forever, longer = 0, [], []
    for key in client.scan_iter(match=pattern, count=500):
        looked += 1
        ttl = client.ttl(key)
        if ttl == -1:
            forever.append(key)
        elif ttl > limit:
            longer.append(key)
        if looked >= REDIS_SCAN_CAP:
            break
    if not forever and not longer:
        return Check(_name(x), True, f"{looked} key(s) matching {pattern} expire within {x.label.retention}", "redis")
    example = (forever or longer)[0]
    example = example.decode() if isinstance(example, bytes) else example
    return Check(_name(x), False, f"{len(forever)} of {looked} key(s) matching {pattern} never expire and "
                 f"{len(longer)} outlive {x.label.retention} (e.g. {example}); give them a TTL in a migration "
                 "(EXPIRE) and in the application", "redis")


def _search(adapter, x: Labelled, days: int) -> Check:
    from polymigrate.adapters.elasticsearch.api import OPENSEARCH

    api = adapter.api
    container = x.object.split(".", 1)[0]
    indices = sorted(api.alias_targets(container) or api.indices(container))  # named as the files name it
    if not indices:
        return Check(_name(x), False, f"no index behind {container}", "elasticsearch")
    unmanaged = []
    for index in indices:
        if api.server.flavour == OPENSEARCH:
            try:
                explained = api.request("GET", f"/_plugins/_ism/explain/{index}") or {}
            except Exception as exc:  # noqa: BLE001  the minimal distribution has no index-management plugin
                return Check(_name(x), False, f"the server cannot enforce {x.label.retention}: no ISM "
                             f"(index-management plugin) answers ({str(exc)[:120]}); install it and attach a "
                             "policy that deletes older data", "elasticsearch")
            policy = (explained.get(index) or {}).get("index.plugins.index_state_management.policy_id") or \
                (explained.get(index) or {}).get("policy_id")
        else:
            explained = api.request("GET", f"/{index}/_ilm/explain") or {}
            policy = ((explained.get("indices") or {}).get(index) or {}).get("policy")
        if not policy:
            unmanaged.append(index)
    if unmanaged:
        return Check(_name(x), False, f"{', '.join(unmanaged)} under no ISM/ILM policy, so nothing deletes data "
                     f"older than {x.label.retention}; attach a policy that deletes after it", "elasticsearch")
    return Check(_name(x), True, f"{', '.join(indices)} managed by an ISM/ILM policy", "elasticsearch")


def _postgres(adapter, x: Labelled, days: int) -> Check:
    if not x.label.purged_by:
        return Check(_name(x), False, f"no purge declared for a {x.label.retention} retention: name the purge "
                     "function in the label (purged_by: schema.function) and schedule it", "postgresql")
    with adapter._open("retention") as conn:  # noqa: SLF001  the adapter's own connection rules
        found = conn.execute("SELECT to_regproc(%s) IS NOT NULL", (x.label.purged_by,)).fetchone()[0]
    if found:
        return Check(_name(x), True, f"purged by {x.label.purged_by}", "postgresql")
    return Check(_name(x), False, f"purge function {x.label.purged_by} does not exist; create it in a migration",
                 "postgresql")


_CHECKS = {"mongodb": _mongo, "redis": _redis, "elasticsearch": _search, "postgresql": _postgres}


def retention_checks(adapter, labels: LabelIndex) -> list[Check]:
    """One check per label of the adapter's technology that carries a retention."""
    out = []
    for x in labels.all():
        if x.technology != adapter.technology or x.derived_from or not x.label.retention:
            continue
        try:
            out.append(_CHECKS[x.technology](adapter, x, x.label.retention_days))
        except Exception as exc:  # noqa: BLE001  a check that cannot run proves nothing: it fails, saying why
            out.append(Check(_name(x), False, f"could not be checked: {type(exc).__name__}: {exc}"[:300],
                             x.technology))
    return out
