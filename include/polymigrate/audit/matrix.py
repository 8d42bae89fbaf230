"""The current state matrix: domain × environment × region, the version of each technology there and
the last run that touched it, from the audit events (chain order). Pure, like ``history``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from polymigrate.audit.history import NO_RUN, _iso, _plan_pending, summarize_runs
from polymigrate.audit.store import AuditRecord
from polymigrate.versions import Version

# -- the matrix: domain × environment × region, current version per technology ----------------------

@dataclass
class Cell:
    """One technology of one (domain, environment, region): what is applied and what is pending."""

    version: str | None = None
    pending: int | None = None
    at: datetime | None = None


@dataclass
class MatrixRow:
    domain: str
    environment: str
    region: str
    cells: dict[str, Cell] = field(default_factory=dict)
    last_run_id: str | None = None
    last_run_outcome: str | None = None
    last_run_url: str | None = None
    last_run_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "environment": self.environment, "region": self.region,
                "technologies": {t: {"version": c.version, "pending": c.pending, "at": _iso(c.at)}
                                 for t, c in sorted(self.cells.items())},
                "last_run": {"run_id": self.last_run_id, "outcome": self.last_run_outcome,
                             "url": self.last_run_url, "at": _iso(self.last_run_at)}}


# Only these kinds change what the matrix shows; the UI asks the store for just these.
MATRIX_KINDS = ("planned", "migration_started", "migration_succeeded", "migration_failed", "baselined", "undone",
                "verified", "refused", "rejected", "approval_requested", "approved", "triggered", "task_failed",
                "task_retried")


def _version_key(v: str) -> Version | None:
    try:
        return Version(v)
    except ValueError:
        return None


def build_matrix(records: Iterable[AuditRecord]) -> tuple[list[str], list[MatrixRow]]:
    """(technologies seen, one row per domain × environment × region) from the events, in chain order.

    The current version of a target is the highest version applied (succeeded or baselined) and not
    undone since; pending is the latest plan's count minus what succeeded after it.
    """
    records = list(records)
    applied: dict[tuple, dict[str, Version]] = {}
    latest_at: dict[tuple, datetime] = {}
    pending: dict[tuple, int] = {}
    rows: dict[tuple[str, str, str], MatrixRow] = {}
    technologies: set[str] = set()

    def row_for(domain: str, env: str, region: str) -> MatrixRow:
        return rows.setdefault((domain, env, region), MatrixRow(domain, env, region))

    def report(target: tuple, version: str | None, at: datetime) -> None:
        """A step read the target's ledger and says where it is: that is the truth at that moment,
        also for what this store never saw applied (before it existed, or by the CLI elsewhere)."""
        key = _version_key(version) if version else None
        kept = {k: v for k, v in (applied.get(target) or {}).items() if key is not None and v <= key}
        if key is not None:
            kept[str(key)] = key
        applied[target] = kept
        latest_at.setdefault(target, at)

    for rec in records:
        e = rec.event
        if e.kind == "planned":
            for (region, tech), n in _plan_pending(e).items():
                pending[(e.domain, e.environment, region, tech)] = n
                technologies.add(tech)
                row_for(e.domain, e.environment, region)
            for name, version in (e.details.get("current") or {}).items():
                region, _, tech = str(name).partition("/")
                if region and tech:
                    report((e.domain, e.environment, region, tech), version, e.at)
            continue
        if e.kind == "verified" and e.region and isinstance(e.details.get("versions"), dict):
            if e.details.get("dry_run"):
                continue
            for tech, version in e.details["versions"].items():
                target = (e.domain, e.environment, e.region, tech)
                technologies.add(tech)
                row_for(e.domain, e.environment, e.region)
                report(target, version, e.at)
            continue
        if not (e.region and e.technology):
            continue
        target = (e.domain, e.environment, e.region, e.technology)
        technologies.add(e.technology)
        row_for(e.domain, e.environment, e.region)
        key = _version_key(e.version) if e.version else None
        if e.kind in ("migration_succeeded", "baselined") and key is not None:
            applied.setdefault(target, {})[str(key)] = key
        elif e.kind == "undone" and key is not None:
            applied.setdefault(target, {}).pop(str(key), None)
        if e.kind in ("migration_succeeded", "baselined", "undone"):
            latest_at[target] = e.at
            if e.kind == "migration_succeeded" and target in pending:
                pending[target] = max(0, pending[target] - 1)

    for (domain, env, region, tech) in set(applied) | set(pending):
        target = (domain, env, region, tech)
        versions = applied.get(target) or {}
        current = max(versions.values()) if versions else None
        row_for(domain, env, region).cells[tech] = Cell(str(current) if current else None, pending.get(target),
                                                         latest_at.get(target))

    for run in summarize_runs(records):
        for row in rows.values():
            if (row.domain, row.environment) != (run.domain, run.environment):
                continue
            touched = row.region in run.regions or row.region in run.planned_regions \
                or (not run.regions and run.run_id != NO_RUN)
            if touched and (row.last_run_at is None or (run.finished_at and run.finished_at >= row.last_run_at)):
                row.last_run_id, row.last_run_url, row.last_run_at = run.run_id, run.run_url, run.finished_at
                row.last_run_outcome = run.region_outcome(row.region) \
                    if row.region in run.regions or row.region in run.planned_regions else run.outcome
    ordered = sorted(rows.values(), key=lambda r: (r.domain, r.environment, r.region))
    return sorted(technologies), ordered
