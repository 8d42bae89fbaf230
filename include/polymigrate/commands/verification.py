"""The verify step (the DAG's verify tasks and the command line's sequence): a region's ledgers proved
equal to the plan, then each adapter's built-in, impact, retention and expectation checks; retention
and the drift baseline after the final verify. Moved out of ``verbs`` (which re-exports it) along
its seam: the other verbs only call ``verify_region``."""

from __future__ import annotations

from typing import Any

from polymigrate.adapters.base import Adapter, Check
from polymigrate.catalog import in_phase
from polymigrate.commands.context import EVENT_LIST_CAP, Run
from polymigrate.commands.validation import expectation_suites
from polymigrate.errors import MigrationError, PermanentError
from polymigrate.expectations import reached_phase
from polymigrate.governance.enforce import retention_checks
from polymigrate.governance.labels import LabelIndex
from polymigrate.ledger import RunContext
from polymigrate.reconcile import current_version, reconcile, to_apply, validation_problems


def impact_checks(run: Run, region: str, technology: str) -> list[Check]:
    """Verify's performance checks (polymigrate.impact) from this run's ``impact_baseline`` evidence; none
    without an audit store, where the evidence is kept."""
    from polymigrate import impact
    from polymigrate.commands.drift import store_of

    store = store_of(run.sink)
    if store is None or not run.who.run_id:
        return []
    found = store.query(run_id=run.who.run_id, kind="impact_baseline", domain=run.domain.name,
                        environment=run.environment.name, region=region, technology=technology)
    return impact.checks([r.event.details or {} for r in found], min_scans=run.policy.dropped_index_min_scans,
                         technology=technology)


def verify_region(run: Run, region: str, technologies: list[str], phase: str | None = None,
                  proved: dict[str, Any] | None = None) -> dict[str, Any]:
    """After a region's targets ran, prove them: every ledger equals the plan (the files up to the
    target version, nothing pending, checksums as applied), then each adapter's built-in checks
    (``Adapter.health_checks``). A ledger that disagrees fails; a failed built-in check fails or
    warns as ``policy.verify_failures`` says. The checks are recorded in the ``verified`` event (or
    ``verify_failed``); retention runs (``expire_retained``) and each target's snapshot becomes the
    drift baseline. With ``phase`` (the check before contract): every file of that phase and the
    earlier ones is applied, later ones may be pending; retention and the baseline wait for the
    final verify.

    ``proved``: what the verify before contract of this same run returned. A target whose ledger
    is still the one it proved (same fingerprint: no file applied, rolled back or edited there
    since, so the contract phase changed nothing on it) is not checked twice in one run: its ledger
    is compared with the catalog again, and the built-in, retention, impact and expectation checks
    that verify ran on it are carried into this one, saying so in the log. A retried or cleared
    verify (``who.try_number`` > 1: someone wants it checked again) runs every check."""
    from polymigrate.commands.drift import record_snapshot
    from polymigrate.ledger import fingerprint

    params = run.params
    versions: dict[str, str | None] = {}
    checks: list[Check] = []
    expired: dict[str, list[str]] = {}
    snapshots: dict[str, Any] = {}
    ctx = run.run_context(region)
    selected = [t for t in technologies if params.selects(region, t)]
    suites = expectation_suites(run)
    ledgers: dict[str, str] = {}
    target_checks: dict[str, list[dict[str, Any]]] = {}
    earlier, carried_over = (proved or {}) if (run.who.try_number or 1) == 1 else {}, []
    for tech in selected:
        with run.target(region, tech) as adapter:
            entries = adapter.read_ledger()
            ledgers[tech] = fingerprint(entries)
            infos = reconcile(run.catalog.applicable(tech), entries,
                              target_version=params.target_version, out_of_order=params.allow_out_of_order)
            versions[tech] = current_version(infos)
            problems = validation_problems(infos, out_of_order=params.allow_out_of_order)
            pending = [i for i in to_apply(infos) if in_phase(i.migration, phase)]
            if pending and not params.dry_run:
                problems.append(f"{len(pending)} migration(s) still pending after execute, first {pending[0].script}")
            checks.append(Check(LEDGER_CHECK, not problems, technology=tech, detail="; ".join(problems) if problems
                                else f"version {versions[tech] or '-'}, nothing pending, checksums as applied"))
            run.log.info("%s/%s: version %s, %d pending%s", region, tech, versions[tech], len(pending),
                         f" up to phase {phase}" if phase else "")
            if params.dry_run:
                continue
            carried = (earlier.get("target_checks") or {}).get(tech)
            if carried is not None and (earlier.get("ledgers") or {}).get(tech) == ledgers[tech]:
                run.log.info("%s/%s: built-in, retention, impact and expectation checks not run again: the verify "
                             "before contract ran them at %s on this same ledger (no file applied there since); "
                             "carried: %d check(s), %d failed", region, tech, earlier.get("verified_at"),
                             len(carried), sum(1 for c in carried if not c.get("ok")))
                checks += [Check(**c) for c in carried]
                carried_over.append(tech)
                continue
            first = len(checks)
            try:
                checks += adapter.health_checks(ctx, run.catalog.applicable(tech))
            except PermanentError as exc:  # a check that cannot run proves nothing: it fails
                checks.append(Check("built-in checks", False, f"could not run: {exc}", technology=tech))
            checks += retention_checks(adapter, LabelIndex.of(run.domain.labels))  # docs/governance.md
            checks += impact_checks(run, region, tech)
            bound = [s for s in suites if s.applies(tech, region)]
            reached = reached_phase(infos)
            waiting = [s.name for s in bound if not s.runs_at(reached)]
            if waiting:
                run.log.info("%s/%s: expectation suite(s) %s not run: bound to other phases than %s, where this "
                             "target's release is", region, tech, ", ".join(waiting), reached or "no file applied")
            bound = [s for s in bound if s.runs_at(reached)]
            if bound:
                try:
                    checks += adapter.run_expectations(bound)
                except PermanentError as exc:
                    checks.append(Check("expectations", False, f"could not run: {exc}", technology=tech))
            target_checks[tech] = [c.to_dict() for c in checks[first:]]
    for c in checks:
        (run.log.info if c.ok else run.log.warning)("%s/%s", region, c)
    failed = [c for c in checks if not c.ok]
    hard = [c for c in failed if c.name == LEDGER_CHECK or run.policy.verify_failures == "fail"]
    details: dict[str, Any] = {"region": region, "versions": versions, "checks": [c.to_dict() for c in checks],
                               "failed": len(failed), **({"phase": phase} if phase else {})}
    if carried_over:  # the trail says which checks this verify took from the one before contract
        details["carried"] = {"from": "verify_before_contract", "verified_at": earlier.get("verified_at"),
                              "technologies": carried_over}
    if hard:
        if not params.dry_run:
            run.emit("verify_failed", details=details, region=region)
        raise PermanentError(f"verification failed in {region}" + (f" (phases up to {phase})" if phase else "")
                             + ":\n  " + "\n  ".join(str(c) for c in hard),
                             hint="each line says what to fix; then clear this task (a failed verify deleted and recorded nothing "
                                  "but this event)")
    if params.dry_run:  # nothing was applied: the trail must not read as a verified change
        run.log.info("dry run: %s checked, nothing applied, no 'verified' event", region)
        return {"region": region, "versions": versions, "dry_run": True}
    if failed:
        run.log.warning("%d check(s) failed in %s; the policy of %s warns instead of failing", len(failed), region,
                        run.environment.name)
    verified_at = run.clock()
    if phase:  # before contract: retention and the drift baseline wait for the final verify
        run.emit("verified", details=details, region=region)
        return {"region": region, "versions": versions, "checks": len(checks), "failed": len(failed),
                "verified_at": verified_at.isoformat(), "phase": phase,
                "ledgers": ledgers, "target_checks": target_checks}  # what the final verify need not prove again
    for tech in selected:  # retention, and the baseline drift compares with: what this run left
        with run.target(region, tech) as adapter:
            expired[tech] = _retention(run, adapter, ctx)
            try:
                snapshots[tech] = record_snapshot(run, region, adapter, source="verify")
            except MigrationError as exc:  # a missing baseline only weakens tomorrow's drift report
                run.log.warning("%s/%s: snapshot not recorded: %s", region, tech, exc)
    details.update(expired={t: n for t, n in expired.items() if n}, snapshots={t: s for t, s in snapshots.items() if s})
    # what labelled data this region holds now: the compliance report's "labelled objects per region"
    labelled = [x.to_dict() for x in LabelIndex.of(run.domain.labels).all() if x.technology in selected]
    if labelled:
        details["labelled"] = labelled[:EVENT_LIST_CAP]
    run.emit("verified", details=details, region=region)
    return {"region": region, "versions": versions, "checks": len(checks), "failed": len(failed),
            "verified_at": verified_at.isoformat(), **({"carried": details["carried"]} if carried_over else {})}


LEDGER_CHECK = "ledger equals plan"


def _retention(run: Run, adapter: Adapter, ctx: RunContext) -> list[str]:
    """What earlier migrations retained for undo and whose time is up, deleted now (Elasticsearch:
    blue-green's old index). Retention never fails a verified region: what is not deleted today is
    tomorrow."""
    try:
        names = adapter.expire_retained(ctx)
    except MigrationError as exc:
        run.log.warning("%s: retention not applied: %s", adapter.target, exc)
        return []
    for name in names:
        run.log.info("%s: deleted %s, its retention passed", adapter.target, name)
    return names


# --- a whole run in one process (the command line) -----------------------------------------------
