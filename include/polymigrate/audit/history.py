"""Turn a stream of audit events into what people ask about: runs, and the current state matrix.

Pure functions over ``AuditRecord`` lists (chain order), shared by the reports and the UI page.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

from polymigrate.audit.links import run_url
from polymigrate.audit.store import AuditRecord
from polymigrate.events import AuditEvent

NO_RUN = "(no run id)"
AIRFLOW_SUFFIX = "@airflow"
# What Airflow records instead of a user for runs nobody triggered by hand (``DagRunType``, as its
# value or as the str() of the enum).
RUN_TYPES = {"scheduled": "the schedule", "backfill": "a backfill", "asset_triggered": "an asset update",
             "asset_materialization": "an asset update", "manual": "a manual run (no user recorded)"}


def person(actor: str | None) -> str | None:
    """Who did something, as a reviewer reads it: the Airflow user's name (``admin``, whether they
    triggered or approved), ``the schedule`` for scheduled runs, ``user@host`` for the CLI."""
    if not actor:
        return None
    name = actor[:-len(AIRFLOW_SUFFIX)] if actor.endswith(AIRFLOW_SUFFIX) else actor
    kind = name.removeprefix("DagRunType.").lower()
    if kind in RUN_TYPES and (name != actor or name.startswith("DagRunType.")):
        return RUN_TYPES[kind]
    return name


@dataclass
class MigrationOutcome:
    """One migration of one run on one target, across its attempts."""

    region: str | None
    technology: str | None
    version: str | None
    script: str | None
    checksum: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    outcome: str = "started"  # started | succeeded | failed
    error: str | None = None
    attempts: int = 0

    @property
    def label(self) -> str:
        return self.script or (f"V{self.version}" if self.version else "?")


@dataclass
class TaskFailure:
    """One failed try of one task, with the error its log ends on."""

    task_id: str | None
    region: str | None
    technology: str | None
    error: str
    at: datetime | None
    try_number: int | None = None
    resolved: bool = False  # a later try of the same task (a retry, or a clear after a fix) supersedes it

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "region": self.region, "technology": self.technology, "error": self.error,
                "at": _iso(self.at), "try_number": self.try_number, "resolved": self.resolved}


@dataclass
class RunSummary:
    """Everything a reviewer asks about one run: who, what, where, when, and how it ended."""

    run_id: str
    domain: str
    environment: str
    dag_id: str | None = None
    run_url: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    triggered_by: str | None = None
    approvers: list[str] = field(default_factory=list)
    signed_off_by: list[str] = field(default_factory=list)  # compliance sign-offs of a regulated change
    regulated: list[dict] = field(default_factory=list)     # what made it regulated (docs/governance.md)
    rejected_by: list[str] = field(default_factory=list)
    overridden_by: list[str] = field(default_factory=list)
    plan_hash: str | None = None
    migrations: list[MigrationOutcome] = field(default_factory=list)
    verified_regions: list[str] = field(default_factory=list)
    unverified_regions: list[str] = field(default_factory=list)  # a verify_failed event there
    planned_regions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    # every ``task_failed`` of the run, in order; ``resolved``: the same task was retried (or cleared) after it
    failures: list[TaskFailure] = field(default_factory=list)
    auto_approved: str | None = None  # why the policy approved without anyone (an approval, not a person)

    @property
    def regions(self) -> list[str]:
        seen = {m.region for m in self.migrations if m.region} | set(self.verified_regions)
        return sorted(seen)

    @property
    def duration_ms(self) -> int | None:
        if self.started_at and self.finished_at:
            return int((self.finished_at - self.started_at).total_seconds() * 1000)
        return None

    @property
    def outcome(self) -> str:
        # a verify cleared after the fix and passing on the retry verified the region after all
        still = set(self.unverified_regions) - set(self.verified_regions)
        kinds = self.kinds if still else [k for k in self.kinds if k != "verify_failed"]
        return _outcome(kinds, self.migrations, bool(self.verified_regions), self.failed_tasks())

    def failed_tasks(self, region: str | None = None) -> list[TaskFailure]:
        """The failures no later try superseded; with ``region``, those of its tasks and of the run-wide
        ones (validate, approve, plan)."""
        return [f for f in self.failures if not f.resolved and (region is None or f.region in (None, region))]

    def region_outcome(self, region: str) -> str:
        """How the run ended in one region (the matrix shows this)."""
        migs = [m for m in self.migrations if m.region == region]
        if region in self.unverified_regions and region not in self.verified_regions:
            return "verification failed"
        if any(f.region == region for f in self.failed_tasks(region)):
            return "failed"  # one of this region's tasks failed (its migrations may never have started)
        if not migs and region not in self.verified_regions and region in self.planned_regions:
            overall = self.outcome
            return {"failed": "halted before this region", "in progress": "waiting"}.get(overall, "not applied")
        kinds = [k for k in self.kinds if k != "verify_failed"]
        return _outcome(kinds if not migs else [k for k in kinds if k != "verified"], migs,
                        region in self.verified_regions, self.failed_tasks(region))

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "dag_id": self.dag_id, "domain": self.domain, "environment": self.environment,
            "run_url": self.run_url, "outcome": self.outcome, "triggered_by": self.triggered_by,
            "approved_by": self.approvers, "signed_off_by": self.signed_off_by, "regulated": self.regulated,
            "approved_automatically": self.auto_approved, "rejected_by": self.rejected_by, "overridden_by": self.overridden_by,
            "plan_hash": self.plan_hash, "regions": self.regions, "verified_regions": self.verified_regions,
            "unverified_regions": self.unverified_regions,
            "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at), "duration_ms": self.duration_ms,
            "notes": self.notes, "failures": [f.to_dict() for f in self.failures],
            "migrations": [{"region": m.region, "technology": m.technology, "version": m.version, "script": m.script,
                            "checksum": m.checksum, "outcome": m.outcome, "duration_ms": m.duration_ms,
                            "attempts": m.attempts, "error": m.error, "started_at": _iso(m.started_at),
                            "finished_at": _iso(m.finished_at)} for m in self.migrations],
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _check_line(c: dict[str, Any]) -> str:
    return f"{c.get('technology') + ' ' if c.get('technology') else ''}{c.get('name')}: {c.get('detail') or 'failed'}"


# Recorded by a run but not steps of it: baselines (``snapshot``) and the nightly ``drift`` report.
NOT_RUN_STEPS = ("snapshot", "drift")


def _outcome(kinds: list[str], migrations: list[MigrationOutcome], verified: bool,
             failed: list[TaskFailure] = ()) -> str:
    if "refused" in kinds:
        return "refused by policy"
    if any(m.outcome == "failed" for m in migrations):
        return "failed"
    if "verify_failed" in kinds:
        return "verification failed"
    if "rejected" in kinds and not migrations:
        return "rejected"
    if failed:  # a task failed and nobody retried it since: whatever else it recorded, the run failed
        return "failed"
    if any(m.outcome == "started" for m in migrations):
        return "in progress"
    if verified or (migrations and all(m.outcome == "succeeded" for m in migrations)):
        return "succeeded"
    if "approval_requested" in kinds and not ({"approved", "overridden"} & set(kinds)):
        return "awaiting approval"
    if "planned" in kinds:
        return "planned, nothing applied"
    return "recorded"


def _run_key(e: AuditEvent) -> tuple[str, str, str]:
    return (e.run_id or NO_RUN, e.domain, e.environment)


def summarize_runs(records: Iterable[AuditRecord]) -> list[RunSummary]:
    """One summary per (run id, domain, environment), oldest run first."""
    runs: dict[tuple[str, str, str], RunSummary] = {}
    first_actor: dict[tuple[str, str, str], str | None] = {}
    migrations: dict[tuple, MigrationOutcome] = {}
    for rec in records:
        e = rec.event
        if e.kind in NOT_RUN_STEPS:
            continue
        key = _run_key(e)
        run = runs.get(key)
        if run is None:
            run = runs[key] = RunSummary(key[0], e.domain, e.environment)
            # Airflow tasks record the triggering user as the actor of every step, so the first
            # event names the triggerer unless a 'triggered' event says otherwise.
            first_actor[key] = e.actor or None
        run.kinds.append(e.kind)
        run.dag_id = run.dag_id or e.dag_id
        # The Airflow serving this report first: a link recorded at the time keeps the port Airflow
        # had then (the demo's changes on each start); the recorded one is for reports made elsewhere.
        run.run_url = run.run_url or run_url(e.dag_id, e.run_id) or e.details.get("run_url")
        run.started_at = min(filter(None, (run.started_at, e.at)))
        run.finished_at = max(filter(None, (run.finished_at, e.at)))
        run.plan_hash = e.details.get("plan_hash") or (e.details.get("hash") if e.kind == "planned" else None) \
            or run.plan_hash
        # Any step may carry who triggered (Airflow knows it from the run); 'triggered' is authoritative.
        if e.kind == "triggered":
            run.triggered_by = person(e.details.get("triggered_by") or e.details.get("by")) \
                or person(e.details.get("run_type") and f"{e.details['run_type']}{AIRFLOW_SUFFIX}") or person(e.actor)
        elif run.triggered_by is None and e.details.get("triggered_by"):
            run.triggered_by = person(e.details["triggered_by"])
        if e.kind == "validated" and e.details.get("regulated"):  # the change set the approvers decided on
            run.regulated = list(e.details["regulated"])
        if e.kind in ("approved", "rejected") and e.details.get("gate") == "contract":
            # a region's go-ahead for the contract phase (docs/phases.md), not an approval of the change set
            if e.details.get("counted") is not False:
                run.notes.append(f"contract phase in {e.region or '?'} {e.kind} by {_decider(e)}"
                                 + (f": {e.details['reason']}" if e.kind == "rejected" and e.details.get("reason") else ""))
        elif e.kind == "approved" and e.details.get("automatic"):
            # nobody approved: the policy needs no one here; said as such, never listed as a person
            run.auto_approved = str(e.details.get("reason") or "the policy needs no approval")
        elif e.kind == "approved":
            who = _decider(e)
            if e.details.get("regulated") and not run.regulated:
                run.regulated = list(e.details["regulated"])
            if e.details.get("sign_off") and who not in run.signed_off_by:
                run.signed_off_by.append(who)
            # an answer the policy did not count (same person twice, wrong role) approved nothing; a
            # compliance sign-off alone is not one of the environment's approvals
            sign_off_only = e.details.get("sign_off") and who not in (e.details.get("approved_by") or [])
            if who not in run.approvers and e.details.get("counted") is not False and not sign_off_only:
                run.approvers.append(who)
        elif e.kind == "rejected":
            run.rejected_by.append(_decider(e))
            run.notes.append(f"rejected by {_decider(e)}" + (f": {e.details['reason']}" if e.details.get("reason") else ""))
        elif e.kind == "overridden":
            # the approve task and each gate the override bypasses record it: name each person once
            names = _people(e)
            run.overridden_by += [n for n in names if n not in run.overridden_by]
            what = f"{e.details['gate']} gate bypassed" if e.details.get("gate") else "approval overridden"
            run.notes.append(f"{what} under an emergency override approved by {', '.join(names)}"
                             + (f": {e.details['reason']}" if e.details.get("reason") else ""))
        elif e.kind == "refused":
            run.notes.append("refused by policy: " + str(e.details.get("reason") or e.details.get("error") or ""))
        elif e.kind == "task_failed":
            run.failures.append(TaskFailure(e.task_id, e.region, e.technology, str(e.details.get("error") or ""),
                                            e.at, e.try_number))
            first = str(e.details.get("error") or "no error text").strip().splitlines()[0]
            run.notes.append(f"task {e.task_id or '?'} failed" + (f" (try {e.try_number})" if e.try_number else "")
                             + f": {first}")
        elif e.kind == "task_retried":
            for f in run.failures:  # the new try decides now; if it fails too it records its own failure
                if f.task_id == e.task_id:
                    f.resolved = True
            who = e.details.get("cleared_by")
            run.notes.append(f"task {e.task_id or '?'} retried (try {e.try_number})" + (f", cleared by {who}" if who else ""))
        elif e.kind == "planned":
            for region, _ in _plan_pending(e):
                if region not in run.planned_regions:
                    run.planned_regions.append(region)
        elif e.kind == "verified" and e.region and e.region not in run.verified_regions:
            run.verified_regions.append(e.region)
            warned = [c for c in e.details.get("checks") or [] if not c.get("ok")]
            if warned:
                run.notes.append(f"verified in {e.region} with {len(warned)} failed check(s) the policy only warns "
                                 "about: " + "; ".join(_check_line(c) for c in warned))
        elif e.kind == "verify_failed":
            if e.region and e.region not in run.unverified_regions:
                run.unverified_regions.append(e.region)
            failed = [c for c in e.details.get("checks") or [] if not c.get("ok")]
            run.notes.append(f"verification failed in {e.region}: " + "; ".join(_check_line(c) for c in failed))
        elif e.kind.startswith("migration_"):
            mkey = key + (e.region, e.technology, e.script or e.version)
            m = migrations.get(mkey)
            if m is None:
                m = migrations[mkey] = MigrationOutcome(e.region, e.technology, e.version, e.script, e.checksum)
                run.migrations.append(m)
            _advance(m, e)
    for key, run in runs.items():
        run.triggered_by = run.triggered_by or first_actor.get(key)
    return sorted(runs.values(), key=lambda r: (r.started_at or datetime.min, r.run_id))


def _decider(e: AuditEvent) -> str:
    """Who approved or rejected: the responding user (``details.by``) when the step records one,
    'automatically' when policy needed nobody, else the event's actor."""
    if e.details.get("automatic"):
        reason = e.details.get("reason")
        return "the policy, automatically" + (f" ({reason})" if reason else "")
    return person(str(e.details.get("by") or e.actor)) or "unknown"


def _people(e: AuditEvent) -> list[str]:
    """Everyone an event names as deciding: ``approved_by`` (a list) or ``by`` (one name, or a
    comma-separated list as the override events write it)."""
    names = e.details.get("approved_by")
    if not isinstance(names, list) or not names:
        names = str(e.details.get("by") or e.actor or "").split(",")
    out: list[str] = []
    for n in names:
        shown = person(str(n).strip())
        if shown and shown not in out:
            out.append(shown)
    return out


def _advance(m: MigrationOutcome, e: AuditEvent) -> None:
    if e.kind == "migration_started":
        m.attempts += 1
        m.outcome, m.error = "started", None
        m.started_at = e.at
    elif e.kind == "migration_succeeded":
        m.outcome, m.finished_at = "succeeded", e.at
        m.duration_ms = e.duration_ms if e.duration_ms is not None else _elapsed(m.started_at, e.at)
        m.attempts = max(m.attempts, 1)
    elif e.kind == "migration_failed":
        m.outcome, m.finished_at = "failed", e.at
        m.duration_ms = e.duration_ms if e.duration_ms is not None else _elapsed(m.started_at, e.at)
        m.error = str(e.details.get("error") or "")
        m.attempts = max(m.attempts, 1)


def _elapsed(start: datetime | None, end: datetime) -> int | None:
    return int((end - start).total_seconds() * 1000) if start else None


def _plan_pending(e: AuditEvent) -> dict[tuple[str, str], int]:
    """Pending counts per (region, technology) from a 'planned' event, in any of the shapes emitted:
    a per-target event (``details.pending``), ``Plan.summary()`` (``targets: {"region/tech": n}``) or
    ``Plan.to_dict()`` (``targets: [{region, technology, steps}]``)."""
    d = e.details
    out: dict[tuple[str, str], int] = {}
    targets = d.get("targets")
    if isinstance(targets, dict):
        for name, n in targets.items():
            region, _, tech = str(name).partition("/")
            if isinstance(n, int):
                out[(region, tech)] = n
    elif isinstance(targets, list):
        for t in targets:
            if isinstance(t, dict) and t.get("region") and t.get("technology"):
                n = t.get("pending", len(t.get("steps") or []))
                out[(t["region"], t["technology"])] = int(n)
    elif e.region and e.technology and isinstance(d.get("pending"), int):
        out[(e.region, e.technology)] = d["pending"]
    return out
