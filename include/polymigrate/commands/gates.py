"""The gates a run passes, decided here once for the DAG's tasks and the command line.

Run-level, at ``plan`` (``verbs.plan``, the DAG's plan task and the CLI's sequence alike), after the
change set's approval: the dependencies of the domain (``check_dependencies``), then the promotion
gate (``check_promotion``: production only runs what already succeeded in staging).

Target-level, before each target is touched (``before_target``, the execute task and the CLI alike),
in this order:

1. the change set's approval (refuse): re-read from the audit store in Airflow, the policy's own
   decision on the command line;
2. the contract phase's separate approval (refuse), contract phase only;
3. the contract soak (wait; refuse when the earlier phases never verified), contract phase only;
4. the execution window with the rehearsal estimate (wait; refuse when the estimate is longer than
   any opening);
5. the target's lock, taken by the executor itself (``migrate_target``): waits up to the policy's
   ``lock_wait_seconds``, then fails as transient.

Refusals come before waits: nothing waits hours to be refused by a gate that could refuse now. The
waits are combined (the latest); the DAG defers until then and checks everything again, the command
line, which cannot wait, refuses saying when to run again. Composition of adapters and the pure
checks in ``policy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from polymigrate.commands.context import EVENT_LIST_CAP, Grant, Run
from polymigrate.commands.planning import Connect, plan_domain
from polymigrate.commands.project import load_domain
from polymigrate.errors import DependencyPending, PermanentError, PolicyRefused, PolymigrateError
from polymigrate.ledger import LedgerEntry
from polymigrate.plan import Plan
from polymigrate.policy import Promotable, estimate_seconds, promotion_missing, wait_until
from polymigrate.reconcile import reconcile, to_apply
from polymigrate.spec import Domain, Environment, Project


@dataclass
class StagingLedgers:
    """Ledger rows of the rehearsal environment's targets, and the targets that could not be read."""

    environment: str
    ledgers: dict[tuple[str, str], list[LedgerEntry]] = field(default_factory=dict)
    unreadable: dict[tuple[str, str], str] = field(default_factory=dict)


def promotable(plan: Plan) -> list[Promotable]:
    """Everything a production plan would apply, once per (technology, script, checksum)."""
    seen = {}
    for t in plan.targets:
        for s in t.steps:
            seen[(t.technology, s.script, s.checksum)] = Promotable(t.technology, s.version, s.script, s.checksum,
                                                                    s.sha256)
    return list(seen.values())


def read_staging_ledgers(project: Project, domain: Domain, staging: Environment, connect: Connect,
                         technologies: list[str] | None = None) -> StagingLedgers:
    """(region, technology) → the ledger rows that staging's runs wrote on every staging target of the domain.

    A target that cannot be read (missing connection, server down) is recorded in ``unreadable``
    instead of raising: the gate then refuses what it cannot confirm, naming that target.
    """
    out = StagingLedgers(staging.name)
    for region in project.regions_of(domain, staging):
        for tech in domain.technology_order():
            if technologies is not None and tech not in technologies:
                continue
            try:
                adapter = connect(region.name, tech)
            except PolymigrateError as exc:
                out.unreadable[(region.name, tech)] = str(exc)
                continue
            if adapter is None:
                continue
            try:
                # only what this environment's runs wrote there: a ledger another environment shares
                # (the plan refuses that) must never make a file look rehearsed or lend it a duration
                out.ledgers[(region.name, tech)] = [e for e in adapter.read_ledger() if e.environment == staging.name
                                                    and e.region in (None, region.name)]
            except PolymigrateError as exc:
                out.unreadable[(region.name, tech)] = str(exc)
            finally:
                adapter.close()
    return out


def promotion_gate(plan: Plan, project: Project, domain: Domain, environment: Environment,
                   connect_staging: Connect) -> list[str]:
    """What the plan would apply that has not succeeded in ``policy.promotion_from`` (empty: pass)."""
    source = environment.policy.promotion_from
    if not source:
        return []
    staging = project.environments.get(source)
    if staging is None:
        return [f"promotion_from names environment '{source}', which is not defined"]
    pending = promotable(plan)
    if not pending:
        return []
    techs = sorted({p.technology for p in pending})
    read = read_staging_ledgers(project, domain, staging, connect_staging, techs)
    missing = [f"{tech} in {source} region {region}: ledger not readable ({why})"
               for (region, tech), why in sorted(read.unreadable.items())]
    readable = [p for p in pending if not any(t == p.technology for (_, t) in read.unreadable)]
    return missing + promotion_missing(readable, read.ledgers)


def promotion_check(run: Run, plan: Plan) -> list[str]:
    """What ``plan`` would apply that has not succeeded in every region of ``promotion_from``."""
    staging = run.project.environments.get(run.policy.promotion_from or "")
    connect = (lambda region, tech: None) if staging is None else \
        run.connector.connect(staging, run.domain, run.params.technologies)
    return promotion_gate(plan, run.project, run.domain, run.environment, connect)


def check_promotion(run: Run, plan: Plan, grant: Grant) -> list[str]:
    """Production runs only what succeeded in every staging region, unless an approved override says so.

    Returns what staging has not confirmed (logged for a dry run, recorded for an override);
    ``PolicyRefused`` otherwise. Who overrode comes from ``grant``, verified from the audit store
    (or the break-glass run itself), never from what a task's XCom claims.
    """
    source = run.policy.promotion_from
    if not source:
        return []
    missing = promotion_check(run, plan)
    if not missing:
        run.log.info("Promotion gate: everything pending already succeeded in %s", source)
        return []
    listing = "\n  ".join(missing)
    if run.params.dry_run:
        run.log.warning("Dry run: a real run would be refused by the promotion gate:\n  %s", listing)
    elif run.params.override and grant.override:
        run.log.warning("EMERGENCY OVERRIDE (%s), approved by %s; not yet succeeded in %s:\n  %s",
                        run.params.override_reason, ", ".join(grant.approved_by), source, listing)
        run.emit("overridden", details={"reason": run.params.override_reason, "gate": "promotion",
                                        "by": ", ".join(grant.approved_by), "how": grant.how,
                                        "missing": missing[:EVENT_LIST_CAP], "changeset_hash": grant.changeset_hash})
    else:
        run.emit("refused", details={"reason": f"not yet succeeded in {source}", "gate": "promotion",
                                     "missing": missing[:EVENT_LIST_CAP]})
        raise PolicyRefused(f"{len(missing)} migration(s) have not succeeded in {source} yet:\n  " + listing,
                            hint=f"run them in {source} first (or, in an emergency, an override with a reason, "
                                 "which needs the stricter approval)")
    return missing


def check_dependencies(run: Run, plan: Plan) -> None:
    """Refuse while a ``depends_on`` domain has pending migrations on one of our targets
    (``DependencyPending``, naming each such domain: the DAG's plan waits instead while that domain's
    DAG is running, as when a nightly schedule starts every domain's rehearsal at the same minute)."""
    from polymigrate.blueprint import dag_id

    ours = {(t.region, t.technology) for t in plan.targets}
    pending: dict[str, list[str]] = {}
    for dep in run.domain.depends_on:
        dep_project, dep_domain, dep_catalog = load_domain(run.project.root, dep, project=run.project)
        connect = run.connector.connect(run.environment, dep_domain, sorted({tech for _, tech in ours}))
        dep_plan = plan_domain(dep_project, dep_domain, dep_catalog, run.environment, connect,
                               regions=run.params.regions)
        dep_targets = [t for t in dep_plan.targets if (t.region, t.technology) in ours]
        waiting = [f"{t.region}/{t.technology}: {len(t.steps)} pending (first {t.steps[0].script})"
                   for t in dep_targets if t.steps]
        waiting += [f"{t.region}/{t.technology}: {e}" for t in dep_targets for e in ([t.error] if t.error else []) + t.problems]
        if waiting:
            pending[dep] = waiting
    if pending:  # every dependency named at once, so a wait covers them all
        lines = [f"'{run.domain.name}' depends on '{dep}', which has pending migrations on the same targets:\n  "
                 + "\n  ".join(waiting) for dep, waiting in pending.items()]
        raise DependencyPending("\n".join(lines), domains=list(pending), hint="migrate " + ", then ".join(
            f"'{dep}' (the DAG {dag_id(dep, run.environment.name)})" for dep in pending) + " first, then run again")


def plan_gates(run: Run, plan: Plan) -> list[str]:
    """What the DAG's plan task would refuse ``plan`` for, in its order (dependencies, then promotion),
    said instead of refused and recorded: the command line's ``plan`` is a preview of that task."""
    from polymigrate.blueprint import dag_id

    refused = []
    try:
        check_dependencies(run, plan)
    except PermanentError as exc:
        refused.append(str(exc))
    source = run.policy.promotion_from
    missing = promotion_check(run, plan) if source else []
    if missing:
        refused.append(f"{len(missing)} migration(s) have not succeeded in {source} yet:\n  " + "\n  ".join(missing)
                       + f"\n  fix: run them in {source} first (the DAG {dag_id(run.domain.name, source)})")
    return refused


def rehearsal_estimate(run: Run, technology: str, pending: list[Promotable]) -> tuple[float | None, list[str]]:
    """Seconds the pending files took in the rehearsal environment's ledgers (None: unknown)."""
    name = run.policy.rehearsal
    rehearsal = run.project.environments.get(name or "")
    if rehearsal is None:
        return None, [p.script for p in pending]
    read = read_staging_ledgers(run.project, run.domain, rehearsal,
                                run.connector.connect(rehearsal, run.domain, [technology]), [technology])
    for (region, tech), why in read.unreadable.items():
        run.log.info("rehearsal ledger %s/%s in %s not readable: %s", region, tech, name, why)
    return estimate_seconds(pending, read.ledgers)


def listed(items: list[str], shown: int) -> str:
    """``a, b, c and 3 more``: a count and its list never disagree."""
    rest = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {rest} more" if rest > 0 else "")


def rehearsal_by_region(run: Run, plan: Plan, *, slowest: int = 3) -> dict[str, Any] | None:
    """Per region of ``plan``: how long its pending files took in the rehearsal environment
    (``policy.rehearsal_from`` or ``promotion_from``), from the ledgers' ``execution_time`` of the same
    checksums, the files never rehearsed and the slowest ones; None without a rehearsal environment."""
    name = run.policy.rehearsal
    rehearsal = run.project.environments.get(name or "")
    if rehearsal is None:
        return None
    techs = sorted({t.technology for t in plan.targets if t.steps})
    read = read_staging_ledgers(run.project, run.domain, rehearsal,
                                run.connector.connect(rehearsal, run.domain, techs), techs)
    regions: dict[str, Any] = {}
    for region in dict.fromkeys(t.region for t in plan.targets):
        pending = [Promotable(t.technology, s.version, s.script, s.checksum, s.sha256)
                   for t in plan.targets if t.region == region for s in t.steps]
        if not pending:
            continue
        seconds, unknown = estimate_seconds(pending, read.ledgers)
        files = []
        for p in pending:
            one, _ = estimate_seconds([p], read.ledgers)
            if one is not None:
                files.append((one, f"{p.technology} {p.script}"))
        regions[region] = {"seconds": seconds, "files": len(pending), "never_rehearsed": unknown[:EVENT_LIST_CAP],
                           "slowest": [{"file": f, "seconds": round(sec, 3)} for sec, f in sorted(files, reverse=True)[:slowest]]}
    return {"environment": name, "regions": regions,
            "unreadable": [f"{r}/{t}" for (r, t) in read.unreadable][:EVENT_LIST_CAP]}


def window_wait(run: Run, region: str, technology: str) -> datetime | None:
    """When this target may start under the execution window: None now (open long enough for what is
    pending by its rehearsal estimate, nothing pending, no window, or a dry run).

    ``PolicyRefused`` when the estimate is longer than a whole opening: waiting would never end.
    """
    window = run.policy.window
    if window is None or run.params.dry_run:
        return None
    with run.target(region, technology) as adapter:
        infos = reconcile(run.catalog.applicable(technology), adapter.read_ledger(),
                          target_version=run.params.target_version, out_of_order=run.params.allow_out_of_order)
    pending = [Promotable(technology, i.version, i.script, i.migration.checksum, i.migration.sha256) for i in to_apply(infos)
               if i.migration is not None]
    if not pending:
        return None  # nothing to run: no reason to wait for the window
    estimate, unknown = rehearsal_estimate(run, technology, pending)
    try:
        moment = wait_until(window, run.clock(), estimate)
    except ValueError as exc:
        run.emit("refused", region=region, technology=technology,
                 details={"reason": str(exc), "gate": "window", "estimate_seconds": estimate})
        raise PolicyRefused(f"{region}/{technology}: {exc}; it would never start",
                            hint="split the migration, or widen policy.window of " + run.environment.name) from None
    what = (f"estimate {estimate:.0f}s from rehearsals" if estimate is not None else "no rehearsal estimate") + \
        (f" ({len(unknown)} file(s) never rehearsed: {listed(unknown, 5)})" if unknown else "")
    if moment is None:
        run.log.info("Execution window open; %d pending, %s", len(pending), what)
    else:
        run.log.info("Execution window of %s closed or too short for %d pending (%s): not before %s",
                     run.environment.name, len(pending), what, moment.isoformat())
    return moment


# --- before a target: the gates of one execute task (the DAG) or one step of the CLI's sequence -------

@dataclass(frozen=True)
class Wait:
    """A gate that lets the target start later: which, when, and the sentence both front ends show."""

    gate: str       # "soak" or "window", as the ``refused`` event names it
    until: datetime
    reason: str     # short, for the event
    message: str    # whole, for the log or the refusal


@dataclass(frozen=True)
class Verdict:
    """``before_target``'s answer when nothing refused: go now (no waits), or not before ``until``."""

    grant: Grant
    waits: tuple[Wait, ...] = ()

    @property
    def until(self) -> datetime | None:
        return max((w.until for w in self.waits), default=None)

    @property
    def message(self) -> str:
        return "\n".join(w.message for w in self.waits)


class Approvals(Protocol):
    """Where a front end's approvals come from (gates 1 and 2 of ``before_target``): the DAG's,
    ``contract_approval.RecordedApprovals``; the command line's, ``CommandLineApprovals``."""

    def change_set(self, run: Run) -> Grant: ...

    def contract(self, run: Run, region: str) -> None: ...


@dataclass
class CommandLineApprovals:
    """The command line's: nobody can answer there, so the policy alone decided at the start of the run
    (``approval.authorize``: automatic, break glass, or refused), and a contract that needs its own
    approval stops the run, naming the DAG that asks for it."""

    grant: Grant
    decided: set[str] = field(default_factory=set)  # regions whose contract is decided: one event each

    def change_set(self, run: Run) -> Grant:
        return self.grant

    def contract(self, run: Run, region: str) -> None:
        if region not in self.decided:
            contract_approval_from_cli(run, region)
            self.decided.add(region)


def before_target(run: Run, region: str, technology: str, approvals: Approvals, *, phase: str | None = None,
                  verified_at: datetime | None = None) -> Verdict:
    """The target-level gates in the module's order: ``PolicyRefused`` (recorded as ``refused`` with its
    gate) for a refusal, else the verdict: go now, or the waits. ``verified_at``: when this run
    verified the region's earlier phases (the soak counts from the audit trail's first such record)."""
    grant = approvals.change_set(run)
    waits = []
    if phase == "contract":
        approvals.contract(run, region)
        soak = contract_gate(run, region, verified_at)
        if soak is not None:
            waits.append(Wait("soak", soak, "contract soak",
                              f"{region}: expand and migrate are applied and verified; the contract phase waits "
                              f"{run.policy.contract_soak_minutes:g} min of soak (policy.contract_soak_minutes), "
                              f"until {soak.isoformat()}"))
    window = window_wait(run, region, technology)
    if window is not None:
        reason = f"the execution window of {run.environment.name} is closed or too short for what is pending"
        waits.append(Wait("window", window, reason, f"{region}/{technology}: {reason}; it opens {window.isoformat()}"))
    return Verdict(grant, tuple(waits))


def refuse_to_wait(run: Run, region: str, technology: str, verdict: Verdict) -> None:
    """Where nothing can wait (the command line): a wait refuses, on record per gate, saying when."""
    if verdict.until is None:
        return
    for w in verdict.waits:
        run.emit("refused", region=region, technology=technology,
                 details={"reason": w.reason, "gate": w.gate, "opens": w.until.isoformat()})
    raise PolicyRefused(verdict.message, hint=f"run again after {verdict.until.isoformat()} (the DAG waits for it by "
                                              "itself)")


def contract_gate(run: Run, region: str, verified_at: datetime | None) -> datetime | None:
    """When a region's contract phase may start: ``None`` now, else the moment its soak ends
    (``policy.contract_soak_minutes`` after the earlier phases verified there as they are now: the
    audit trail's first such record, else ``verified_at``, this run's verify)."""
    soak = run.policy.contract_soak_minutes
    if not soak or run.params.dry_run:
        return None
    verified_at = phase_verified_at(run, region) or verified_at
    if verified_at is None:
        raise PermanentError(f"{region}: the contract phase needs the earlier phases verified first, and this run "
                             "has no record of it", hint="clear verify_before_contract of this region, then contract")
    ends = verified_at + timedelta(minutes=soak)
    return ends if ends > run.clock() else None


def phase_verified_at(run: Run, region: str) -> datetime | None:
    """When the region's earlier phases last verified before a contract, from the audit store (None
    without one, or without such a record)."""
    query = getattr(run.sink, "query", None)
    if query is None:
        return None
    since: datetime | None = None
    for r in query(domain=run.domain.name, environment=run.environment.name,
                   kind=["verified", "migration_succeeded"]):
        e = r.event
        if e.region != region:
            continue
        phase = (e.details or {}).get("phase")
        if e.kind == "migration_succeeded" and phase != "contract":
            since = None  # the earlier phases changed: their soak starts again at the next verify
        elif e.kind == "verified" and phase == "migrate" and since is None:
            since = e.at
    return since


def contract_approval_from_cli(run: Run, region: str) -> None:
    """The command line cannot collect the contract phase's separate approval: it stops before the
    contract, naming the DAG that asks, unless an emergency override breaks the glass (recorded)."""
    from polymigrate.blueprint import dag_id

    if not run.policy.contract_approval or run.params.dry_run:
        return
    if run.params.override:
        run.emit("overridden", region=region, details={"gate": "contract", "by": run.who.actor, "how": "break_glass",
                                                       "reason": run.params.override_reason})
        return
    run.emit("refused", region=region, details={"gate": "contract", "reason": "contract approval"})
    raise PolicyRefused(f"{region}: expand and migrate are applied and verified; the contract phase needs a separate "
                        f"approval (policy.contract_approval), which the command line cannot collect",
                        hint=f"trigger the DAG {dag_id(run.domain.name, run.environment.name)}: it runs only the "
                             "contract phase, after its approve_contract task")
