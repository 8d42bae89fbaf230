"""The ``doc_md`` of a healthy DAG (what the Airflow UI shows on its Docs tab): plain text from the specs.

Kept apart from ``blueprint`` so that module stays about the DAG's shape; ``blueprint`` calls
``dag_doc`` once per DAG it compiles.
"""

from __future__ import annotations

import os
from pathlib import Path

from polymigrate.catalog import PHASES
from polymigrate.spec.models import Domain, Environment, Rollout


def dag_doc(domain: Domain, env: Environment, regions: list[str], techs: list[str], rollout: Rollout,
            root: Path, unserved: list[str] = (),
            phases: dict[str, list[str]] | None = None) -> str:
    approvals = env.policy.approvals
    if approvals.required == 0:
        how = "Approval is automatic in this environment."
    else:
        who = ", ".join(approvals.roles + approvals.users) or "any user"
        how = (f"Needs {approvals.required} approval(s) by {who}: open the `approve` task "
               "(Browse → Required Actions) and choose **Approve** after reading the summary.")
        if not approvals.triggerer_may_approve:
            how += " The person who triggered the run may not approve it."
        if approvals.high_risk_required is not None or approvals.high_risk_roles:
            how += (f" High-risk or destructive change sets and emergency overrides need "
                    f"{approvals.high_risk_required or approvals.required + 1} by "
                    f"{', '.join(approvals.high_risk_roles or approvals.roles) or 'any user'}.")
        if approvals.expiry_hours:
            how += f" An approval expires after {approvals.expiry_hours:g} h."
    w = env.policy.window
    if w is not None:
        how += (f"\n\n**Execution window**: {', '.join(w.days)} {w.start}-{w.end} {w.timezone}; execute tasks wait "
                "(deferred) until it opens and do not start what rehearsals say cannot finish before it closes.")
    if env.policy.promotion_from:
        how += (f"\n\n**Promotion gate**: only migrations that already succeeded in every "
                f"{env.policy.promotion_from} region run here.")
    # Folders, not counts: listing them would make every task's parse grow with the number of files
    # (issue 24); what is pending where is the plan's, read from the ledgers.
    rows = "\n".join(f"| {t} | `{os.path.relpath(domain.technology_dir(t), root)}/` |" for t in techs)
    strategy = rollout.strategy + (f" (canary: {rollout.canary_region})" if rollout.strategy == "canary" else "") + \
        ("" if rollout.halt_on_failure else ", continues after a failed region")
    return f"""### {domain.name} in {env.name}

{domain.description}

- **Owners**: {", ".join(domain.owners) or "-"}
- **Regions**: {", ".join(regions) or "-"}
- **Technologies** (in execution order): {", ".join(techs) or "-"}
- **Phases**: {_phases_doc(techs, phases, env)}
- **Rollout**: {strategy}
- **Schedule**: {_schedule_doc(env)}
- **Skipped by default**: {"; ".join(unserved) or "nothing: every technology is served"}
- **Depends on**: {", ".join(domain.depends_on) or "-"} (their DAGs must run first)

| technology | migration folder |
|---|---|
{rows}

**Pending work** per region is computed by the `plan` task from each target's ledger (see its log);
`validate`'s log counts each technology's files.

**Approval**: {how}

**Trigger params**: `dry_run`, `target_version`, `regions`, `technologies`, `allow_out_of_order`.
A dry run applies nothing: its execute logs say "would apply" and "DRY RUN".

**A run stays queued?** The DAG is paused: switch the toggle next to its name on (a paused DAG keeps
triggered runs queued and starts none).

**A task failed and you fixed a migration file?** {_retry_doc(env)}
"""


def _retry_doc(env: Environment) -> str:
    if env.policy.approvals.required == 0 and not env.policy.promotion_from:
        return ("Clear the failed task: the new files are linted and approved automatically again (recorded "
                "in the audit trail with what changed), then it runs them.")
    return ("Clear the `approve` task with **Downstream** selected: the request re-opens for the new files, "
            "showing what changed since the last approval; approvals of the old files do not count. Clearing "
            "only the failed task is refused, naming `approve`.")


def _phases_doc(techs: list[str], phases: dict[str, list[str]] | None, env: Environment) -> str:
    if phases is None:
        return "none declared: each technology's files run in one block"
    parts = []
    for ph in PHASES:
        with_it = [t for t in techs if ph in (phases.get(t) or ["expand"])]
        if with_it:
            parts.append(f"{ph} ({', '.join(with_it)})")
    text = " → ".join(parts) + "; contract runs after the earlier phases verified"
    soak = env.policy.contract_soak_minutes
    if soak:
        text += f" and {soak:g} min of soak"
    if env.policy.contract_approval and "contract" in " ".join(parts):
        text += ", and a separate approval in each region (task `approve_contract`, Browse → Required Actions)"
    return text


def _schedule_doc(env: Environment) -> str:
    p = env.policy
    if not p.schedule:
        return "manual only"
    return (f"`{p.schedule}` (UTC), " + ("starts unpaused" if p.start_unpaused else "starts paused (policy.start_unpaused: false)")
            + "; unpausing never starts a catch-up run: the first run is the next scheduled time")
