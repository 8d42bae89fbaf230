"""The compliance section of the audit page and exports (docs/governance.md#reports), from the
audit store alone: per regulation, which regulated changes ran where and who signed them off;
labelled objects per region (as the last verify there recorded them); and violations (a change
refused by residency, retention found not enforced by verify or drift).
"""

from __future__ import annotations

from typing import Any, Iterable

from polymigrate.audit.history import RunSummary
from polymigrate.audit.store import AuditRecord


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def compliance(records: Iterable[AuditRecord], runs: list[RunSummary]) -> dict[str, Any]:
    records = list(records)
    by_regulation: dict[str, list[dict]] = {}
    for run in runs:
        if not run.regulated:
            continue
        regions = run.regions or run.planned_regions
        for region in regions:
            for change in run.regulated:
                for regulation in (change.get("regulations") or {}).get(region) or ["(no regulation named)"]:
                    by_regulation.setdefault(regulation, []).append({
                        "domain": run.domain, "environment": run.environment, "region": region,
                        "run_id": run.run_id, "object": change.get("object"), "kind": change.get("kind"),
                        "action": change.get("action"), "file": change.get("file"), "line": change.get("line"),
                        "outcome": run.region_outcome(region), "approved_by": run.approvers,
                        "signed_off_by": run.signed_off_by, "at": _iso(run.finished_at or run.started_at)})
    labelled: dict[str, dict[str, dict]] = {}
    violations: list[dict] = []
    for r in records:  # chain order: a later verify of a region replaces what an earlier one listed
        e = r.event
        where = "/".join(p for p in (e.environment, e.region) if p)
        if e.kind == "verified" and e.details.get("labelled") is not None:
            objects = labelled.setdefault(where, {})
            for key in [k for k, v in objects.items() if v["domain"] == e.domain]:
                del objects[key]
            for x in e.details["labelled"]:
                objects[f"{e.domain}:{x['object']}"] = {"domain": e.domain, **x}
        if e.kind == "refused" and e.details.get("gate") == "residency":
            for v in e.details.get("violations") or ():
                violations.append({"what": "residency", "domain": e.domain, "environment": e.environment,
                                   "run_id": e.run_id, "at": _iso(e.at), **v})
        if e.kind in ("verified", "verify_failed"):
            for c in e.details.get("checks") or ():
                if str(c.get("name", "")).startswith("retention ") and not c.get("ok"):
                    violations.append({"what": "retention", "domain": e.domain, "environment": e.environment,
                                       "region": e.region, "run_id": e.run_id, "at": _iso(e.at),
                                       "label": c["name"].removeprefix("retention "), "detail": c.get("detail")})
        if e.kind == "drift":
            for d in e.details.get("differences") or ():
                if str(d.get("object", "")).startswith("retention "):
                    violations.append({"what": "retention (drift)", "domain": e.domain, "environment": e.environment,
                                       "region": d.get("region"), "at": _iso(e.at),
                                       "label": d["object"].removeprefix("retention "), "detail": d.get("after")})
    return {"regulations": dict(sorted(by_regulation.items())),
            "labelled_objects": {k: sorted(v.values(), key=lambda x: (x["domain"], x["object"]))
                                 for k, v in sorted(labelled.items())},
            "violations": violations}
