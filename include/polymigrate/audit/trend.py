"""The rehearsal trend: how long each file took in the rehearsal environment (staging's nightly runs),
next to the estimate production's approvers were shown.

Production's approval summary estimates each region from the rehearsal environment's ledgers (the
slowest successful run of the same file, ``policy.estimate_seconds``) and records that estimate on
its ``approval_requested`` event. The trend says whether to trust it: the last runs of each file
there (``migration_succeeded`` events, ``duration_ms``), whether they are steady or growing, and
what the file took in production once it ran. Pure functions over audit records, like
``history``; the audit page reads the store and renders the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from polymigrate.audit.store import AuditRecord

TREND_RUNS = 5     # runs shown per file
TREND_FILES = 30   # files shown per (domain, environment): the ones rehearsed most recently


@dataclass
class FileTrend:
    technology: str
    script: str
    runs_ms: list[int]               # the rehearsal environment's last runs of this file, oldest first
    regions: list[str]               # where those runs were (a multi-region staging runs each file per region)
    estimate_ms: int | None          # slowest successful rehearsal of the newest checksum: what the estimate uses
    changed: bool = False            # the file's checksum changed: older runs were another file
    production_ms: int | None = None  # its latest run in the environment the approval was for

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RehearsalTrend:
    domain: str
    environment: str                 # the environment the approval was asked for (production)
    rehearsal: str                   # where its durations come from (staging)
    at: datetime                     # the approval request that showed the estimate
    run_id: str | None
    regions: dict[str, Any]          # the estimate per region shown then (seconds, files, never_rehearsed)
    files: list[FileTrend] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in self.__dict__.items() if k != "files"}, "at": self.at.isoformat(),
                "files": [f.to_dict() for f in self.files]}


def latest_estimates(requests: Iterable[AuditRecord]) -> list[AuditRecord]:
    """The newest ``approval_requested`` event carrying a rehearsal estimate, per (domain, environment)."""
    latest: dict[tuple[str, str], AuditRecord] = {}
    for rec in requests:
        e = rec.event
        if e.kind == "approval_requested" and (e.details.get("rehearsal") or {}).get("environment"):
            key = (e.domain, e.environment)
            if key not in latest or rec.id > latest[key].id:
                latest[key] = rec
    return [latest[k] for k in sorted(latest)]


def rehearsal_trend(request: AuditRecord, runs: Iterable[AuditRecord], *, last: int = TREND_RUNS,
                    files: int = TREND_FILES) -> RehearsalTrend:
    """The trend behind one approval request's estimate. ``runs``: ``migration_succeeded`` events of
    the domain in the rehearsal environment and in the request's environment (others are ignored)."""
    e = request.event
    rehearsal = e.details["rehearsal"]
    source = rehearsal["environment"]
    by_file: dict[tuple[str, str], list[AuditRecord]] = {}
    production: dict[tuple[str, str], AuditRecord] = {}
    for rec in sorted(runs, key=lambda r: r.id):
        r = rec.event
        if r.kind != "migration_succeeded" or r.domain != e.domain or not r.script or r.duration_ms is None:
            continue
        key = (r.technology or "", r.script)
        if r.environment == source:
            by_file.setdefault(key, []).append(rec)
        elif r.environment == e.environment:
            production[key] = rec
    out: list[tuple[int, FileTrend]] = []
    for (tech, script), recs in sorted(by_file.items(), key=lambda kv: -kv[1][-1].id)[:files]:
        newest = recs[-1].event.checksum
        same = [x.event.duration_ms for x in recs if x.event.checksum == newest]
        shown = recs[-last:]
        prod = production.get((tech, script))
        out.append((recs[-1].id, FileTrend(tech, script, [x.event.duration_ms for x in shown],
                             sorted({x.event.region or "" for x in shown}), max(same) if same else None,
                             changed=any(x.event.checksum != newest for x in shown),
                             production_ms=prod.event.duration_ms if prod else None)))
    # in the order they last ran there: the order production runs them
    return RehearsalTrend(e.domain, e.environment, source, e.at, e.run_id, rehearsal.get("regions") or {},
                          [f for _, f in sorted(out, key=lambda x: x[0])])
