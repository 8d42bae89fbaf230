"""The ``approve`` task: the environment's approval policy, answered through Airflow's human-in-the-loop.

Only what needs Airflow lives here: opening (and reopening) the HITL request, assigned to the
people the policy allows, and turning each response into an answer. What to ask, whether an answer
counts and when the change set is approved are decided by ``polymigrate.commands.approval`` (roles
from ``approvers.yaml``, four-eyes, N distinct people, expiry, risk escalation, hash binding), which
also records every answer in the audit store.

One task collects every approval a change set needs. Each answer resumes it; the answers so far are
carried in the task's ``next_kwargs`` (which survive each response: Airflow adds the response as
``event`` to them). Only the people the policy allows are assigned, so Airflow's API itself answers
403 to anyone else (the triggering user included where four-eyes applies); the policy is evaluated
again on every answer anyway, which also catches one person answering twice.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import TaskAwaitingInput

from polymigrate_airflow.operators import PolymigrateMixin
from polymigrate_airflow.init_levels import one_init_level


class ApproveOperator(PolymigrateMixin, ApprovalOperator):
    """Collects the approvals the environment's policy requires, bound to the change-set hash."""

    ui_color = "#fde7a9"

    def __init__(self, *, specs_root: str, domain: str, environment: str, **kwargs):
        kwargs.setdefault("subject", f"Approve {domain} migrations in {environment}")
        kwargs.setdefault("fail_on_reject", True)  # a rejected change set must not end as a green run
        # Airflow hands the DAG's params in here already; only task-sourced ones reach the approval form.
        params = ParamsDict(kwargs.pop("params", None) or {})
        params["comment"] = Param(None, type=["null", "string"], title="Comment", source="task",
                                  description="Why you approve or reject; recorded in the audit trail.")
        kwargs["params"] = params
        super().__init__(**kwargs)
        self.specs_root, self.domain, self.environment = specs_root, domain, environment

    def execute(self, context):
        return self.guarded(context, self._request)

    def _request(self, context):
        from polymigrate.commands.approval import request_approval

        outcome = request_approval(self.open_run(context), self.upstream(context, "validate"))
        if not isinstance(outcome, dict):
            self.body = outcome.body
            from polymigrate_airflow import observability  # the approvers' route learns it waits

            observability.approval_requested(self, context, outcome.body or "")
        return self._settle(context, outcome)

    def execute_complete(self, context, event: dict[str, Any], approvals: list[dict] | None = None,
                         request: dict | None = None):
        if request is None:  # parked by an older version of this operator: plain single approval
            return super().execute_complete(context, event)
        return self.guarded(context, lambda ctx: self._answer(ctx, event, list(approvals or []), request))

    def _answer(self, context, event: dict[str, Any], approvals: list[dict], request: dict):
        from polymigrate.commands.approval import record_answer, refuse

        run = self.open_run(context)
        base = {"changeset_hash": request["changeset_hash"], "override": request.get("override", False)}
        if event.get("timedout") or "error" in event:
            refuse(run, ["no decision before the response timeout; trigger a new run"], base)
        approvals.append(self._response(event, request))
        return self._settle(context, record_answer(run, request, approvals, self.upstream(context, "validate")))

    def _response(self, event: dict[str, Any], request: dict) -> dict:
        """One HITL response as an answer for the command layer to judge."""
        from polymigrate.commands.approval import when

        chosen = (event.get("chosen_options") or [None])[0]
        return {"user": (event.get("responded_by_user") or {}).get("name") or "unknown",
                "decision": "approve" if chosen == self.APPROVE else "reject",
                "hash": request["changeset_hash"], "at": when(event.get("responded_at")).isoformat(),
                "comment": ((event.get("params_input") or {}).get("comment") or "").strip()}

    def _settle(self, context, outcome):
        """The task's result once decided; otherwise it waits for the next answer."""
        if isinstance(outcome, dict):
            return outcome
        self._park(context, outcome.approvals, outcome.request)

    def _park(self, context, approvals: list[dict], request: dict):
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        # On an existing request the server only clears the previous answer: body and assignees stay.
        self.assigned_users = [{"id": u, "name": u} for u in request.get("eligible") or []]
        upsert_hitl_detail(ti_id=context["task_instance"].id, options=self.options, subject=self.subject,
                           body=self.body, defaults=self.defaults, multiple=self.multiple,
                           params=self.serialized_params, assigned_users=self.assigned_users)
        raise TaskAwaitingInput(method_name="execute_complete",
                                kwargs={"approvals": approvals, "request": request}, timeout=self.response_timeout)


class ApproveContractOperator(ApproveOperator):
    """A region's separate approval of a release's contract phase (``policy.contract_approval``), after
    its earlier phases verified; ``polymigrate.commands.contract_approval`` decides and records."""

    ui_color = "#f9cfa0"

    def __init__(self, *, region: str, **kwargs):
        kwargs.setdefault("subject", f"Approve the contract phase of {kwargs.get('domain')} in "
                                     f"{kwargs.get('environment')} / {region}")
        super().__init__(**kwargs)
        self.region = region

    def _request(self, context):
        from polymigrate.commands.contract_approval import request_contract_approval

        approved_hash, summary = self.approved(context)  # the change set approve approved, re-evaluated after a fix
        outcome = request_contract_approval(self.open_run(context), self.region,
                                            {**summary, "changeset_hash": approved_hash or summary.get("changeset_hash")})
        if not isinstance(outcome, dict):
            self.body = outcome.body
            from polymigrate_airflow import observability  # the approvers' route learns it waits

            observability.approval_requested(self, context, outcome.body or "")
        return self._settle(context, outcome)

    def _answer(self, context, event: dict[str, Any], approvals: list[dict], request: dict):
        from polymigrate.commands.approval import refuse
        from polymigrate.commands.contract_approval import GATE, record_contract_answer

        run = self.open_run(context)
        if event.get("timedout") or "error" in event:
            refuse(run, [f"{self.region}: no decision on the contract phase before the response timeout; its earlier "
                         "phases stay applied (trigger a new run)"], {"gate": GATE, "changeset_hash": request["changeset_hash"]})
        approvals.append(self._response(event, request))
        return self._settle(context, record_contract_answer(run, self.region, request, approvals))


one_init_level(ApprovalOperator, ApproveOperator, ApproveContractOperator)  # issue 24, P4
