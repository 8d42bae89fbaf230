"""The no-op shortcut of an execute task (issue 24, P6): what plan read, handed to the execute tasks,
and the one ledger read that shows a target plan found with nothing pending still has nothing to do.

Plan records per target the fingerprint of the ledger rows it planned against (``plan_record``, in
its XCom). An execute task whose target had nothing pending reads that target's ledger once, with no
lock (a read, as plan's), and when the rows are exactly plan's it is done: no migration file, no
catalog, no audit store, no gate. Anything else takes the full path unchanged (the gates with the
approval re-check, the lock, the fence, the plan-hash check that refuses a file changed after plan):
work pending, a ledger changed since plan, no fingerprint (a plan of an older version, a cleared
task of an older run), a retry or clear (its retry goes on record there), the contract phase (its own
approval and soak), rows written by this run (the full path audits any whose event is missing), an
approval re-evaluated after plan, or any error reading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from polymigrate.commands.context import Connector, Grant
from polymigrate.executor import RunResult
from polymigrate.ledger import fingerprint
from polymigrate.plan import Plan


def plan_record(result: Plan, grant: Grant) -> dict[str, Any]:
    """What plan adds to its summary for the execute tasks: each selected target's ledger fingerprint
    and the change set it planned for."""
    selected = {f"{t.region}/{t.technology}" for t in result.targets}
    return {"changeset_hash": grant.changeset_hash,
            "ledgers": {k: v for k, v in result.ledgers.items() if k in selected}}


def nothing_to_do(root: str | Path, domain: str, environment: str, region: str, technology: str,
                  planned: dict[str, Any], *, connector: Connector, run_id: str | None, try_number: int | None,
                  approved_hash: Callable[[], str | None], phase: str | None, dry_run: bool, log: Any) -> RunResult | None:
    """A no-op's result when plan found nothing pending on the target and its ledger is still the one
    plan read; None: take the full path (the log says why when the target was a candidate).
    ``approved_hash`` is asked only then: the change set the approve task approved, if it says."""
    from polymigrate.commands.project import environment_of
    from polymigrate.spec.loader import load_project

    key = f"{region}/{technology}"
    fp = (planned.get("ledgers") or {}).get(key)
    if fp is None or (planned.get("targets") or {}).get(key) != 0 or phase == "contract" or (try_number or 1) > 1:
        return None
    approved = approved_hash()
    if approved is not None and approved != planned.get("changeset_hash"):
        return None  # approve was re-evaluated after plan: plan's reading is not the approved one
    try:
        project = load_project(root)  # domain.yaml and the environments only: no migration file
        env, dom = environment_of(project, environment, root), project.domains.get(domain)
        if dom is None:
            return None
        with connector.target(env, region, technology, dom) as adapter:
            entries, target = adapter.read_ledger(), adapter.target
    except Exception as exc:  # noqa: BLE001  the full path reads again and reports it as it always did
        log.info("%s: ledger not compared with plan's (%s); taking the full path", key, exc)
        return None
    finally:
        connector.close()
    if fingerprint(entries) != fp:
        log.info("%s: the ledger changed since plan; taking the full path", key)
        return None
    if run_id and any(e.run_id == run_id for e in entries):
        return None
    log.info("%s: nothing pending and the ledger is as plan read it (%s): nothing to do", key, fp[:12])
    return RunResult(target, technology, dry_run=dry_run, current_version=(planned.get("current") or {}).get(key))
