"""The ``approve`` task: the environment's approval policy, answered through Airflow's human-in-the-loop.

One task collects every approval a change set needs. Each answer resumes it; it evaluates the
policy (``polymigrate.policy.evaluate``: roles from ``approvers.yaml``, four-eyes, N distinct people,
expiry, risk escalation, hash binding) and either finishes (approved), fails (a rejection or a
refusal, with the reasons) or opens the request again, carrying the answers so far in the task's
``next_kwargs`` (which survive each response: Airflow adds the response as ``event`` to them).

Only the people the policy allows are assigned to the request, so Airflow's API itself answers 403
to anyone else (the triggering user included where four-eyes applies); the policy is evaluated
again on every answer anyway, which also catches one person answering twice.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamsDict
from airflow.sdk.exceptions import TaskAwaitingInput

from polymigrate_airflow.operators import PolymigrateMixin, RunParams, all_migrations, plan_preview

SUPPRESSIONS_SHOWN = 20


def _when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return datetime.now(timezone.utc)


def summary_markdown(domain: str, environment: str, summary: dict[str, Any], decision, eligible: list[str],
                     triggered_by: str, preview: dict[str, Any], override_reason: str | None = None) -> str:
    """What the approver reads before choosing Approve or Reject."""
    s = summary or {}
    lint = s.get("lint") or {}
    who = ", ".join(eligible)
    lines = [f"**{domain}** in **{environment}**, triggered by **{triggered_by}**: needs **{decision.required}** "
             f"approval(s) from distinct people ({who})."]
    if decision.escalated:
        lines.append("The bar is raised: " + ("**emergency override** requested" if decision.override else
                     "high risk or destructive change set") + ".")
    if override_reason:
        lines.append(f"Override reason given: {_quoted(override_reason)} (what staging has not confirmed runs anyway).")
    techs = s.get("migrations") or {}
    regions = preview.get("regions") or {}
    header = "| region | " + " | ".join(techs) + " |\n|---|" + "---|" * len(techs)
    rows = [f"| {r} | " + " | ".join(str(counts.get(t, "-")) for t in techs) + " |" for r, counts in regions.items()]
    lines += ["", "**Pending migrations per region** (from each target's ledger now):", "", header, *rows]
    if preview.get("error"):
        lines.append(f"\n_Ledgers not readable: {preview['error']}_ — files per technology: "
                     + ", ".join(f"{t} {n}" for t, n in techs.items()))
    destructive = "**yes**" if s.get("destructive") else "no"
    lines += ["", f"- lint risk: **{s.get('risk') or 'not assessed'}**, findings: {lint.get('findings', 0)}, "
              f"blocking: {lint.get('blocking', 0)}; destructive: {destructive}"]
    for sup in (s.get("suppressions") or [])[:SUPPRESSIONS_SHOWN]:
        lines.append(f"  - suppressed `{sup.get('rule')}` in {sup.get('file')}:{sup.get('line')}: "
                     f"{_quoted(str(sup.get('reason') or ''))}")
    if preview.get("staging") is not None:
        missing = preview["staging"]
        lines.append(f"- already succeeded in {preview.get('staging_env')}: "
                     + ("**everything pending**" if not missing else
                        f"**no** — {len(missing)} not yet: " + "; ".join(missing[:10])))
    lines += [f"- change-set hash: `{s.get('changeset_hash', '?')}` (execution refuses if any file or "
              "placeholder differs from what you approve)",
              "", "Each answer is recorded with your name; this request reopens until enough distinct "
              "people approved. **Reject** (with a comment) ends the run."]
    return "\n".join(lines)


def _quoted(text: str) -> str:
    """Free text from a triggerer or a file author as one inert code span: no Markdown of theirs can
    add lines that look like the facts approvers rely on."""
    flat = " ".join(text.split()).replace("`", "'")
    return f"`{flat[:500]}`"


def change_set(domain: str, environment: str, changeset_hash: str, triggered_by: str, summary: dict):
    """What is being approved, from the validate task's summary: one definition for the approve task
    and for the later checks of plan and execute."""
    from polymigrate.policy import ChangeSet

    return ChangeSet(domain=domain, environment=environment, hash=changeset_hash, triggered_by=triggered_by,
                     risk=summary.get("risk") or "low", destructive=bool(summary.get("destructive")),
                     destructive_waived=bool(summary.get("destructive_waived")),
                     blocking_findings=int((summary.get("lint") or {}).get("blocking", 0)))


def recorded_answers(sink, domain: str, environment: str, run_id: str | None,
                     changeset_hash: str) -> tuple[list[dict], list[dict]]:
    """(counted approvals, rejections) of this run and change set in the audit store, oldest first.

    ``([], [])`` when the sink cannot be queried (no audit store configured).
    """
    query = getattr(sink, "query", None)
    if query is None or not run_id:
        return [], []
    approvals: dict[str, dict] = {}
    rejections: list[dict] = []
    for r in query(domain=domain, environment=environment, run_id=run_id, kind=["approved", "rejected"]):
        d = r.event.details
        if d.get("changeset_hash") != changeset_hash or not d.get("by") or d.get("automatic"):
            continue
        answer = {"user": d["by"], "decision": "approve" if r.event.kind == "approved" else "reject",
                  "hash": changeset_hash, "at": r.event.at.isoformat(),
                  "comment": d.get("comment") or d.get("reason") or ""}
        if r.event.kind == "rejected":
            rejections.append(answer)
        elif d.get("counted"):
            approvals.setdefault(d["by"], answer)
    return list(approvals.values()), rejections


def decide(specs_root: str, env, change, approvals: list[dict], override: bool):
    """The policy's decision on these answers, now (expiry and roles as of this moment)."""
    from polymigrate.policy import Approval, evaluate
    from polymigrate.spec.approvers import load_approvers

    people = load_approvers(specs_root)
    answers = [Approval(a["user"], a["decision"], a["hash"], _when(a["at"]), people.roles_of(a["user"]),
                        a.get("comment", "")) for a in approvals]
    return evaluate(env.policy, change, answers, datetime.now(timezone.utc), override=override)


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

    # --- the request ------------------------------------------------------------------------
    def execute(self, context):
        return self.guarded(context, self._request)

    def _change(self, context, env, summary: dict, request: dict):
        return change_set(self.domain, env.name, request["changeset_hash"], request["triggered_by"], summary)

    def _request(self, context):
        from polymigrate.errors import PolicyRefused
        from polymigrate.policy import eligible_roles, evaluate
        from polymigrate.spec.approvers import load_approvers

        project, env = self.load_environment()
        summary = context["ti"].xcom_pull(task_ids="validate") or {}
        params = RunParams.from_context(context)
        run = context.get("dag_run")
        request = {"changeset_hash": summary.get("changeset_hash") or "",
                   "triggered_by": getattr(run, "triggering_user_name", None) or f"{getattr(run, 'run_type', 'unknown')}",
                   "override": params.override, "reason": params.override_reason}
        if not request["changeset_hash"]:
            raise PolicyRefused("the validate task pushed no change-set hash; clear validate first")
        change = self._change(context, env, summary, request)
        now = datetime.now(timezone.utc)
        decision = evaluate(env.policy, change, [], now, override=params.override)
        base = {"changeset_hash": change.hash, "required": decision.required, "override": params.override}
        if decision.status == "approved":
            self.log.info("Approved automatically: the environment's policy needs no approval")
            self.emit(context, "approved", details={**base, "automatic": True,
                                                    "reason": "approvals.required: 0", "by": "policy"})
            return {"approved": True, "automatic": True, "approved_by": [], **base}
        if decision.status == "refused":
            self._refuse(context, decision.reasons, base)

        ap = env.policy.approvals
        exclude = None if ap.triggerer_may_approve else change.triggered_by
        people = load_approvers(self.specs_root).eligible(eligible_roles(ap, change, override=params.override),
                                                          ap.users, exclude=exclude)
        if len(people) < decision.required:
            self._refuse(context, [f"needs {decision.required} distinct approver(s) but only {len(people)} may "
                                   f"approve ({', '.join(people) or 'nobody'}) under the policy of {env.name}"
                                   + (f", {exclude} excluded as the triggering user" if exclude else "")
                                   + "; add people with the required roles to migration_specs/approvers.yaml"], base)
        request["eligible"] = people
        prior = self._recorded_approvals(context, env, change.hash)
        if prior:
            # a new try of this task (cleared, or failed by Airflow while parked): the answers already
            # given for this very change set still count, so approvers are not asked twice
            decision = self._decide(env, change, prior, params.override)
            self.log.info("Approvals recorded earlier in this run for %s: %s", change.hash[:12],
                          ", ".join(a["user"] for a in prior))
            if decision.status == "approved":
                return self._approved(context, change, decision, request, base)
        self.body = summary_markdown(self.domain, env.name, summary, decision, people, change.triggered_by,
                                     self._preview(project, env, context), params.override_reason)
        self.log.info("Waiting for %d approval(s) from %s (Browse → Required Actions)", decision.required, people)
        self.emit(context, "approval_requested", details={**base, "eligible": people, "escalated": decision.escalated,
                                                          "reason": params.override_reason})
        self._park(context, prior, request)

    def _recorded_approvals(self, context, env, changeset_hash: str) -> list[dict]:
        approvals, rejections = recorded_answers(self.sink(env), self.domain, env.name, context.get("run_id"),
                                                 changeset_hash)
        if rejections:
            r = rejections[-1]
            self._refuse(context, [f"rejected earlier in this run by {r['user']}"
                                   + (f": {r['comment']}" if r["comment"] else "")
                                   + "; a rejection stands (trigger a new run)"],
                         {"changeset_hash": changeset_hash})
        return approvals

    def _decide(self, env, change, approvals: list[dict], override: bool):
        return decide(self.specs_root, env, change, approvals, override)

    def _approved(self, context, change, decision, request: dict, base: dict) -> dict:
        if decision.override:
            self.emit(context, "overridden", details={**base, "by": ", ".join(decision.approved_by),
                                                      "reason": request.get("reason"),
                                                      "approved_by": decision.approved_by})
        self.log.info("Approved by %s for change set %s", ", ".join(decision.approved_by), change.hash[:12])
        return {"approved": True, "automatic": False, "approved_by": decision.approved_by,
                "required": decision.required, "decision": decision.status, **base}

    def _preview(self, project, env, context) -> dict[str, Any]:
        """Pending per region and what staging has not yet run; never fails the request."""
        try:
            return plan_preview(self, project, env, RunParams.from_context(context))
        except Exception as exc:  # the approver still sees the files and lint; the plan task enforces
            self.log.warning("preview not available: %s", exc)
            return {"error": str(exc)[:300]}

    def _park(self, context, approvals: list[dict], request: dict):
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        # On an existing request the server only clears the previous answer: body and assignees stay.
        self.assigned_users = [{"id": u, "name": u} for u in request.get("eligible") or []]
        upsert_hitl_detail(ti_id=context["task_instance"].id, options=self.options, subject=self.subject,
                           body=self.body, defaults=self.defaults, multiple=self.multiple,
                           params=self.serialized_params, assigned_users=self.assigned_users)
        raise TaskAwaitingInput(method_name="execute_complete",
                                kwargs={"approvals": approvals, "request": request}, timeout=self.response_timeout)

    def _refuse(self, context, reasons: list[str], details: dict):
        from polymigrate.errors import PolicyRefused

        self.emit(context, "refused", details={**details, "reason": "; ".join(reasons)})
        raise PolicyRefused("approval refused:\n  " + "\n  ".join(reasons))

    # --- each answer ------------------------------------------------------------------------
    def execute_complete(self, context, event: dict[str, Any], approvals: list[dict] | None = None,
                         request: dict | None = None):
        if request is None:  # parked by an older version of this operator: plain single approval
            return super().execute_complete(context, event)
        return self.guarded(context, lambda ctx: self._answer(ctx, event, list(approvals or []), request))

    def _answer(self, context, event: dict[str, Any], approvals: list[dict], request: dict):
        from polymigrate.commands import load_domain
        from polymigrate.errors import PolicyRefused
        from polymigrate.policy import bound_changeset_hash

        base = {"changeset_hash": request["changeset_hash"], "override": request.get("override", False)}
        if event.get("timedout") or "error" in event:
            self._refuse(context, ["no decision before the response timeout; trigger a new run"], base)
        user = (event.get("responded_by_user") or {}).get("name") or "unknown"
        chosen = (event.get("chosen_options") or [None])[0]
        comment = ((event.get("params_input") or {}).get("comment") or "").strip()
        answer = {"user": user, "decision": "approve" if chosen == self.APPROVE else "reject",
                  "hash": request["changeset_hash"], "at": _when(event.get("responded_at")).isoformat(),
                  "comment": comment}
        approvals.append(answer)

        _, env = self.load_environment()
        _, domain, catalog = load_domain(self.specs_root, self.domain)
        current = bound_changeset_hash(domain.name, env, all_migrations(domain, catalog))
        if current != request["changeset_hash"]:
            self._refuse(context, ["the change set changed while waiting for approval (hash "
                                   f"{current[:12]}, approvers saw {request['changeset_hash'][:12]}); "
                                   "trigger a new run to approve it again"], {**base, "current_hash": current})

        summary = context["ti"].xcom_pull(task_ids="validate") or {}
        change = self._change(context, env, summary, request)
        override = bool(request.get("override"))
        decision = self._decide(env, change, approvals, override)
        before = self._decide(env, change, approvals[:-1], override)
        if answer["decision"] == "reject" and decision.status == "refused":
            self.emit(context, "rejected", details={**base, "by": user, "reason": comment or "no comment given"})
            raise PolicyRefused("change set rejected:\n  " + "\n  ".join(decision.reasons))
        counted = len(decision.approved_by) > len(before.approved_by)  # this answer, not an earlier one
        why = [i for i in decision.ignored if i.startswith(f"{user}:")]
        self.emit(context, "approved", details={**base, "by": user, "counted": counted, "comment": comment,
                                                "approved_by": decision.approved_by, "required": decision.required,
                                                **({"not_counted": why[-1]} if not counted and why else {})})
        if decision.status == "refused":
            self._refuse(context, decision.reasons, base)
        if decision.status == "approved":
            return self._approved(context, change, decision, request, base)
        self.log.info("%s answered%s; still waiting: %s%s", user, "" if counted else " (not counted)",
                      "; ".join(decision.reasons), "".join(f"\n  not counted: {i}" for i in decision.ignored))
        self._park(context, approvals, request)
