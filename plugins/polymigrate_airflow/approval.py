"""The ``approve`` task: automatic where the policy needs no approval, Airflow HITL otherwise.

The decision "does this run need a person?" lives in ``approval_needed`` only, so the approval
policy issue (roles, four-eyes, N approvers, hash binding) replaces one function, not the operator.
Approvers act in the Airflow UI (Required Actions) or through the HITL REST endpoint; the body they
see is built at execute time from the ``validate`` task's summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from polymigrate_airflow.operators import PolymigrateMixin


@dataclass(frozen=True)
class ApprovalNeed:
    required: int
    reason: str

    @property
    def automatic(self) -> bool:
        return self.required == 0


def approval_needed(policy, summary: dict[str, Any] | None) -> ApprovalNeed:
    """How many approvals this change set needs under the environment's policy (0: automatic)."""
    required = policy.approvals.required
    if required and (summary or {}).get("risk") in ("high", "critical") and policy.approvals.high_risk_required:
        return ApprovalNeed(max(required, policy.approvals.high_risk_required), "high risk change set")
    if required == 0:
        return ApprovalNeed(0, "the environment's policy needs no approval (approvals.required: 0)")
    return ApprovalNeed(required, f"the environment's policy needs {required} approval(s)")


def summary_markdown(domain: str, environment: str, summary: dict[str, Any] | None, need: ApprovalNeed) -> str:
    """What the approver reads before choosing Approve or Reject."""
    s = summary or {}
    rows = "\n".join(f"| {tech} | {n} |" for tech, n in (s.get("migrations") or {}).items()) or "| - | - |"
    lint = s.get("lint") or {}
    return (f"**{domain}** in **{environment}**: {need.reason}.\n\n"
            f"| technology | migrations in the change set |\n|---|---|\n{rows}\n\n"
            f"- change-set hash: `{s.get('changeset_hash', '?')}`\n"
            f"- lint risk: **{s.get('risk', 'not assessed')}**, findings: {lint.get('findings', 0)}, "
            f"blocking: {lint.get('blocking', 0)}\n\n"
            "Pending migrations per region are computed right after approval by the `plan` task, "
            "which refuses anything the ledgers say has drifted.")


class ApproveOperator(PolymigrateMixin, ApprovalOperator):
    """Waits for a human approval in the UI unless the environment approves automatically."""

    ui_color = "#fde7a9"

    def __init__(self, *, specs_root: str, domain: str, environment: str, **kwargs):
        kwargs.setdefault("subject", f"Approve {domain} migrations in {environment}")
        kwargs.setdefault("fail_on_reject", True)  # a rejected change set must not end as a green run
        super().__init__(**kwargs)
        self.specs_root, self.domain, self.environment = specs_root, domain, environment

    def execute(self, context):
        return self.guarded(context, self._execute)

    def _execute(self, context):
        project, env = self.load_environment()
        summary = context["ti"].xcom_pull(task_ids="validate")
        need = approval_needed(env.policy, summary)
        self.body = summary_markdown(self.domain, self.environment, summary, need)
        if need.automatic:
            self.log.info("Approved automatically: %s", need.reason)
            self.emit(context, "approved", details={"automatic": True, "reason": need.reason,
                                                    "changeset_hash": (summary or {}).get("changeset_hash")})
            return {"approved": True, "automatic": True}
        self.log.info("Waiting for approval in the UI (Required Actions): %s", need.reason)
        self.emit(context, "approval_requested", details={"required": need.required,
                                                          "changeset_hash": (summary or {}).get("changeset_hash")})
        return super().execute(context)

    def execute_complete(self, context, event: dict[str, Any]):
        chosen = (event.get("chosen_options") or [None])[0]
        user = event.get("responded_by_user") or {}
        self.emit(context, "approved" if chosen == self.APPROVE else "rejected",
                  details={"by": user.get("name") if isinstance(user, dict) else str(user)})
        return super().execute_complete(context, event)
