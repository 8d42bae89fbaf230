"""One function per verb. Policy-bound verbs take a ``Run`` (scope, params, who, sink, connector);
target verbs take a resolved target (adapter, files, ``RunContext``) and a sink, so ad hoc runs use
them too. The DAG's tasks and the command line call the same functions, in the same order
(``migrate_environment`` is the DAG's sequence in one process).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

from polymigrate.adapters.base import Adapter, AdoptReport, RepairReport
from polymigrate.catalog import PHASES, Migration, applicable, phase_counts, phases_line
from polymigrate.commands.approval import authorize
from polymigrate.commands.validation import (  # noqa: F401  (the verbs of a run, in one place)
    changes_between, describe_changes, expectation_suites, file_digests, lint, summarize, validate)
from polymigrate.commands.context import EVENT_LIST_CAP, Grant, Run, RunParams, UsageError, Who
from polymigrate.commands.gates import (  # noqa: F401  (contract_gate, phase_verified_at, contract_approval_from_cli: their callers' names)
    CommandLineApprovals, before_target, check_dependencies, check_promotion, contract_approval_from_cli, contract_gate,
    phase_verified_at, refuse_to_wait, window_wait)
from polymigrate.commands.planning import plan_domain, plan_table
from polymigrate.commands.verification import verify_region
from polymigrate.errors import MigrationError, PermanentError, PolicyRefused
from polymigrate.events import AuditEvent, EventSink, NullSink
from polymigrate.executor import RunResult, migrate as execute, undo_to
from polymigrate.governance.enforce import residency_violations
from polymigrate.governance.labels import LabelIndex
from polymigrate.ledger import RunContext
from polymigrate.plan import Plan
from polymigrate.policy import wait_until
from polymigrate.reconcile import MigrationInfo, reconcile

Progress = Callable[[int, int, MigrationInfo], None]


# --- the steps of a run (the DAG's tasks) ----------------------------------------------------------

def trigger_details(who: Who, params: RunParams, verb: str, by: str | None = None) -> dict[str, Any]:
    """What the ``triggered`` event says about a run: who, from where, asking for what."""
    return {"by": by, "run_type": who.run_type, "origin": who.origin, "verb": verb, "params": asdict(params)}


def plan(run: Run, grant: Grant) -> Plan:
    """Every selected target's plan, past the dependency and promotion gates; records ``planned``."""
    params, env = run.params, run.environment
    unknown = [r for r in params.regions or [] if r not in env.regions]
    if unknown:
        raise UsageError(f"param regions: {unknown} not in {env.name} ({sorted(env.regions)})")
    from polymigrate.targets import left_out_files, served, skipped

    # a target the environment cannot serve (not listed for the region, no adapter installed) is
    # skipped and said why, never a failure: scheduled runs select every technology by default
    serve = served(run.project, run.domain, env)
    reachable = [t for t in params.technologies or run.domain.technology_order() if any(t in ts for ts in serve.values())]
    result = plan_domain(run.project, run.domain, run.catalog, env,
                         run.connector.connect(env, run.domain, reachable), regions=params.regions,
                         target_version=params.target_version, out_of_order=params.allow_out_of_order)
    result.targets = [t for t in result.targets if params.selects(t.region, t.technology)
                      and t.technology in serve.get(t.region, ())]
    result.skipped = skipped(run.project, run.domain, env, params.regions, params.technologies) \
        + left_out_files(env, run.domain.name)
    phases = phase_counts(run.catalog, run.domain.technology_order())
    run.log.info("Plan %s/%s (hash %s)\n%s%s%s", run.domain.name, env.name, result.hash[:12], plan_table(result),
                 "".join(f"\nskipped {line}" for line in result.skipped),
                 f"\nphases in each region: {phases_line(phases, run.policy.contract_soak_minutes, run.policy.contract_approval)}" if phases else "")
    if result.problems:
        fixes = [run.connector.how_to_configure(c) for c in sorted(run.connector.unconfigured)]
        raise PermanentError("the plan cannot run:\n  " + "\n  ".join(result.problems),
                             hint="; ".join(fixes + ["fix each line, then run again (in Airflow: clear this task)"]))
    check_dependencies(run, result)
    check_promotion(run, result, grant)
    check_residency(run, result)
    run.emit("planned", details={**result.summary(), "dry_run": params.dry_run})
    return result


def check_residency(run: Run, result: Plan) -> None:
    """Refuse a plan whose pending files touch labelled data the region's policy forbids there
    (``policy.residency``), naming rule, label and region; recorded as ``refused`` (docs/governance.md)."""
    if not run.policy.residency or not run.domain.labels:
        return
    by_script = {(m.technology, m.script): m for t in run.domain.technology_order() for m in run.catalog.applicable(t)}
    pending = {(t.region, t.technology): [by_script[(t.technology, s.script)] for s in t.steps
                                          if (t.technology, s.script) in by_script] for t in result.targets}
    found = residency_violations(run.environment, LabelIndex.of(run.domain.labels), pending)
    if not found:
        return
    listing = "\n  ".join(str(v) for v in found)
    if run.params.dry_run:
        run.log.warning("Dry run: a real run would be refused by residency:\n  %s", listing)
        return
    run.emit("refused", details={"reason": "residency", "gate": "residency",
                                 "violations": [v.to_dict() for v in found][:EVENT_LIST_CAP]})
    raise PolicyRefused(f"{len(found)} change(s) would place labelled data where the policy of "
                        f"{run.environment.name} forbids it:\n  " + listing,
                        hint="run the change only in the regions the rule allows (param regions), or change the "
                             "residency rule in the environment's policy with the compliance team")


def migrate_target(run: Run, region: str, technology: str, *, plan_hash: str | None,
                   on_progress: Progress | None = None, phase: str | None = None) -> RunResult:
    """Apply one target's pending migrations (the executor re-reads the ledger under the target's lock);
    with ``phase``, only the files of that release phase (and any earlier one still pending)."""
    params = run.params
    with run.target(region, technology) as adapter:
        run.log.info("%s/%s%s: %s via connection '%s'%s", region, technology, f" [{phase}]" if phase else "",
                     adapter.target, run.environment.connection_id(region, technology),
                     " (dry run)" if params.dry_run else "")
        if not params.dry_run:  # what verify compares with (polymigrate.impact), read before anything runs
            from polymigrate import impact
            baseline = impact.before(adapter, run.catalog.applicable(technology), run.run_context(region).placeholders,
                                     run.log)
            if baseline:
                run.emit("impact_baseline", region=region, technology=technology, details=baseline)
        try:
            result = execute(adapter, run.catalog.applicable(technology), run.run_context(region, plan_hash),
                             target_version=params.target_version, out_of_order=params.allow_out_of_order,
                             dry_run=params.dry_run, sink=run.sink, on_progress=on_progress, phase=phase)
        except MigrationError as exc:
            exc.hint = retry_advice(run, exc.hint, f"{region}.{technology}")
            raise
    for a in result.applied:
        run.log.info("%s %s (%s ms)", a["action"], a["script"], a["ms"])
    run.log.info("%s", outcome_line(region, technology + (f" [{phase}]" if phase else ""), result))
    return result


RUN_AGAIN = "run migrate again"  # the adapters' advice, in the command line's words


def retry_advice(run: Run, hint: str | None, task: str) -> str | None:
    """The adapters say "run migrate again", which is the command line's way; in Airflow the retry is
    clearing the failed task (it re-reads the ledger under the lock and applies only what is pending)."""
    if not hint or run.who.origin != "airflow" or RUN_AGAIN not in hint:
        return hint
    name = run.who.task_id or task
    return hint.replace(RUN_AGAIN, f"clear the task `{name}` in this run (its grid cell → Clear): it re-reads the "
                                   "ledger and applies only what is still pending")


def outcome_line(region: str, technology: str, result: RunResult) -> str:
    """One target's result as the task log ends it; a dry run must never read like a real run."""
    if result.dry_run:
        return (f"{region}/{technology}: DRY RUN, nothing applied: {len(result.applied)} would apply, "
                f"{result.skipped} already applied; stays at version {result.current_version or 'none (empty ledger)'}")
    return (f"{region}/{technology}: {len(result.applied)} applied, {result.skipped} already applied, "
            f"now at version {result.current_version or 'none'}")


@dataclass
class Callbacks:
    """How a front end shows progress: a target starting, each file, a target's result."""

    target: Callable[[str], None] = lambda label: None
    progress: Progress | None = None
    result: Callable[[RunResult], None] = lambda result: None


def migrate_environment(run: Run, show: Callbacks | None = None) -> list[RunResult]:
    """The DAG's sequence in one process: validate, approval, plan (dependencies, promotion), then per
    region in rollout order each target inside the window, then verify. Stops at the first failure
    (sequential rollout, halting). A closed window refuses instead of waiting."""
    show = show or Callbacks()
    summary = validate(run)
    grant = authorize(run, summary)
    planned = plan(run, grant)
    results = []
    planned_targets = {(t.region, t.technology) for t in planned.targets}
    approvals = CommandLineApprovals(grant)
    for region in run.regions():
        techs = [t for t in run.technologies(region.name) if (region.name, t) in planned_targets]
        # phase-major across technologies when the domain declares phases (the DAG's shape)
        steps = [(None, t) for t in techs] if not run.catalog.phased else \
            [(ph, t) for ph in PHASES for t in techs if ph in (run.catalog.phases(t) or ["expand"])]
        verified_at, proved = None, None
        for phase, tech in steps:
            if phase == "contract" and verified_at is None:  # the DAG's verify_before_contract task
                proved = verify_region(run, region.name, techs, phase="migrate")
                verified_at = run.clock()
            refuse_to_wait(run, region.name, tech, before_target(run, region.name, tech, approvals, phase=phase,
                                                                 verified_at=verified_at))
            show.target(f"{region.name}/{tech}{' [' + phase + ']' if phase else ''} "
                        f"({run.environment.connection_id(region.name, tech)})")
            result = migrate_target(run, region.name, tech, plan_hash=planned.hash, on_progress=show.progress,
                                    phase=phase)
            results.append(result)
            show.result(result)
        if techs:
            verify_region(run, region.name, techs, proved=proved)
    return results


def require_window(run: Run, region: str, technology: str, *, pending_only: bool = True) -> None:
    """Where nothing can wait (the command line), a closed window refuses, saying when it opens.

    ``pending_only``: only when something is pending there, with the rehearsal estimate (migrate);
    otherwise whenever the window is closed (undo, whose work no rehearsal estimates)."""
    if pending_only:
        moment = window_wait(run, region, technology)
    else:
        window = run.policy.window
        moment = None if window is None or run.params.dry_run else wait_until(window, run.clock())
    if moment is None:
        return
    reason = f"the execution window of {run.environment.name} is closed or too short for what is pending"
    run.emit("refused", region=region, technology=technology,
             details={"reason": reason, "gate": "window", "opens": moment.isoformat()})
    raise PolicyRefused(f"{region}/{technology}: {reason}; it opens {moment.isoformat()}",
                        hint="run again then (the DAG waits for it by itself)")


def authorize_maintenance(run: Run, verb: str) -> Grant:
    """undo, baseline and repair from the command line have no DAG task to collect approvals, so where
    approvals are required they need the break-glass override; undo reverts changes, so where
    destructive changes are banned it needs the override too."""
    summary = {"changeset_hash": run.changeset_hash(), "destructive": verb == "undo"}
    return authorize(run, summary)


def undo_environment(run: Run, to: str, show: Callbacks | None = None) -> list[RunResult]:
    show = show or Callbacks()
    authorize_maintenance(run, "undo")
    results = []
    for region in run.regions():
        for tech in run.technologies(region.name):
            require_window(run, region.name, tech, pending_only=False)
            show.target(f"{region.name}/{tech} ({run.environment.connection_id(region.name, tech)})")
            with run.target(region.name, tech) as adapter:
                result = undo(adapter, run.migrations(tech), run.run_context(region.name), to,
                              dry_run=run.params.dry_run, sink=run.sink, on_progress=show.progress)
            results.append(result)
            show.result(result)
    return results


def each_target(run: Run, verb: str, action: Callable[[str, str, Adapter, RunContext], Any]) -> list[Any]:
    """``action(region, technology, adapter, ctx)`` on every selected target after the policy allowed ``verb``."""
    authorize_maintenance(run, verb)
    out = []
    for region in run.regions():
        for tech in run.technologies(region.name):
            with run.target(region.name, tech) as adapter:
                out.append(action(region.name, tech, adapter, run.run_context(region.name)))
    return out


def info(run: Run, region: str | None = None) -> list[tuple[str, str, list[MigrationInfo], bool]]:
    """(region, technology, states, ledger read?) of every target; where no connection is configured
    the states are those of an empty ledger."""
    out = []
    for r in run.project.regions_of(run.domain, run.environment):
        if region and r.name != region:
            continue
        for tech in run.domain.technology_order():
            adapter = run.connector.open(run.environment, r.name, tech, run.domain)
            entries = []
            if adapter is not None:
                try:
                    entries = adapter.read_ledger()
                finally:
                    adapter.close()
            out.append((r.name, tech, reconcile(run.catalog.applicable(tech), entries), adapter is not None))
    return out


# --- verbs on one resolved target (spec or ad hoc) -------------------------------------------------

def _event(kind: str, adapter: Adapter, ctx: RunContext, **kw: Any) -> AuditEvent:
    return AuditEvent(kind=kind, domain=ctx.domain, environment=ctx.environment, region=ctx.region,
                      technology=adapter.technology, actor=ctx.actor, run_id=ctx.run_id, dag_id=ctx.dag_id,
                      task_id=ctx.task_id, try_number=ctx.try_number, **kw)


def migrate(adapter: Adapter, migrations: list[Migration], ctx: RunContext, *, target_version: str | None = None,
            out_of_order: bool = False, dry_run: bool = False, sink: EventSink | None = None,
            on_progress: Progress | None = None) -> RunResult:
    """Apply what is pending on one target (``polymigrate.executor.migrate``)."""
    return execute(adapter, applicable(migrations), ctx, target_version=target_version, out_of_order=out_of_order,
                   dry_run=dry_run, sink=sink, on_progress=on_progress)


def undo(adapter: Adapter, migrations: list[Migration], ctx: RunContext, to: str, *, dry_run: bool = False,
         sink: EventSink | None = None, on_progress: Progress | None = None) -> RunResult:
    """Revert every applied version above ``to`` through its undo file; records ``undone`` per version."""
    return undo_to(adapter, migrations, ctx, to, dry_run=dry_run, sink=sink, on_progress=on_progress)


def baseline(adapter: Adapter, ctx: RunContext, version: str, description: str,
             sink: EventSink | None = None) -> None:
    """Mark versions up to ``version`` applied without running them; records ``baselined``."""
    with adapter.lock(ctx.owner, ctx.lock_wait_seconds):
        adapter.baseline(version, description, ctx)
    (sink or NullSink()).emit(_event("baselined", adapter, ctx, version=version, details={"description": description}))


def adopt(adapter: Adapter, migrations: list[Migration], ctx: RunContext, *, tool: str, source: str | None = None,
          sink: EventSink | None = None) -> AdoptReport:
    """Copy the history of ``tool`` (the one the target was migrated with before: ``flyway``,
    ``migrate-mongo``) into the ledger under the lock; records ``baselined`` with ``adopted`` (the tool),
    ``adopted_from``, ``rows`` and the files found changed or missing. Refused when the adapter's
    ``capabilities.adopts`` is another tool."""
    if adapter.capabilities.adopts != tool:
        raise PermanentError(f"{adapter.technology} cannot adopt a {tool} history"
                             + (f" (it adopts {adapter.capabilities.adopts}'s)" if adapter.capabilities.adopts else ""),
                             hint="adopt a Flyway history into PostgreSQL, a migrate-mongo changelog into MongoDB")
    with adapter.lock(ctx.owner, ctx.lock_wait_seconds):
        report = adapter.adopt(ctx, migrations, source=source)
    (sink or NullSink()).emit(_event("baselined", adapter, ctx, details={
        "adopted": adapter.capabilities.adopts, "adopted_from": report.source, "rows": report.imported,
        "changed": report.changed[:EVENT_LIST_CAP], "missing": report.missing[:EVENT_LIST_CAP]}))
    return report


def repair(adapter: Adapter, migrations: list[Migration], ctx: RunContext, sink: EventSink | None = None) -> RepairReport:
    """Realign checksums of changed files and mark rows of missing files deleted (kept for the record);
    records ``repaired``."""
    with adapter.lock(ctx.owner, ctx.lock_wait_seconds):
        report = adapter.repair(migrations, ctx)
    (sink or NullSink()).emit(_event("repaired", adapter, ctx, details={"realigned": report.realigned[:EVENT_LIST_CAP],
                                                                        "removed": report.removed[:EVENT_LIST_CAP]}))
    return report
