"""Approval as every front end needs it: asking (the DAG's human-in-the-loop task), each answer,
the check that plan and execute make hours later, and the command line where nobody can answer.

The rules themselves are ``polymigrate.policy.evaluate`` (pure). What this module adds is where the
answers come from: the audit store, where each answer is recorded as it is given, is read back and
evaluated again at the moment of each check (expiry, roles, rejections). A task's XCom is only a
claim; a ``Grant`` is what was verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from polymigrate.commands.context import Grant, Run
from polymigrate.commands.gates import promotion_check, rehearsal_by_region
from polymigrate.commands.planning import plan_domain
from polymigrate.commands.summary import APPROVE_TASK, QUOTE, _quoted, summary_markdown  # noqa: F401  (its callers' name)
from polymigrate.commands.validation import changes_between, describe_changes, file_digests, validate
from polymigrate.errors import PolicyRefused
from polymigrate.events import EventSink
from polymigrate.policy import Approval, ChangeSet, Decision, eligible_roles, evaluate
from polymigrate.spec.approvers import load_approvers

PROBLEMS_SHOWN = 10  # unreadable ledgers listed in the approval preview


@dataclass
class Pending:
    """People must answer: who may, what they read, and what the approve task carries between answers."""

    request: dict[str, Any]   # changeset_hash, triggered_by, override, reason, eligible
    decision: Decision
    body: str
    approvals: list[dict]     # counted so far (recorded earlier in this run, or given since)


def when(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value)
    return datetime.now(timezone.utc)


def change_set(run: Run, summary: dict, changeset_hash: str | None = None) -> ChangeSet:
    """What is being approved, from the validate step's summary: one definition for asking, each
    answer and the later checks of plan and execute."""
    return ChangeSet(domain=run.domain.name, environment=run.environment.name,
                     hash=changeset_hash or summary.get("changeset_hash") or "", triggered_by=run.who.triggered_by,
                     risk=summary.get("risk") or "low", destructive=bool(summary.get("destructive")),
                     destructive_waived=bool(summary.get("destructive_waived")),
                     blocking_findings=int((summary.get("lint") or {}).get("blocking", 0)),
                     regulated=len(summary.get("regulated") or ()))


def recorded_answers(sink: EventSink, domain: str, environment: str, run_id: str | None,
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
        if d.get("changeset_hash") != changeset_hash or not d.get("by") or d.get("automatic") or d.get("gate") == "contract":
            continue  # gate: a contract phase's own approval (commands/contract_approval.py), not the change set's
        answer = {"user": d["by"], "decision": "approve" if r.event.kind == "approved" else "reject",
                  "hash": changeset_hash, "at": r.event.at.isoformat(),
                  "comment": d.get("comment") or d.get("reason") or ""}
        if r.event.kind == "rejected":
            rejections.append(answer)
        elif d.get("counted"):
            approvals.setdefault(d["by"], answer)
    return list(approvals.values()), rejections


def decide(run: Run, change: ChangeSet, answers: list[dict], override: bool) -> Decision:
    """The policy's decision on these answers, now (expiry and roles as of this moment)."""
    people = load_approvers(run.project.root)
    given = [Approval(a["user"], a["decision"], a["hash"], when(a["at"]), people.roles_of(a["user"]),
                      a.get("comment", "")) for a in answers]
    return evaluate(run.policy, change, given, run.clock(), override=override)


def approval_status(run: Run, changeset_hash: str, summary: dict) -> Decision:
    """The decision on the answers recorded in the audit store for this run and change set
    (``approve-status``); ``PolicyRefused`` when there is no audit store to read them from."""
    if getattr(run.sink, "query", None) is None:
        raise PolicyRefused("no audit store to read the approvals from, so none can be confirmed",
                            hint="configure the audit store (connection 'polymigrate_audit')")
    approvals, rejections = recorded_answers(run.sink, run.domain.name, run.environment.name, run.who.run_id,
                                             changeset_hash)
    return decide(run, change_set(run, summary, changeset_hash), approvals + rejections, run.params.override)


CLEAR_APPROVE = (f"in this run, clear the task `{APPROVE_TASK}` with its downstream tasks (Airflow: the "
                 f"`{APPROVE_TASK}` task → Clear → with \"Downstream\" selected): the request re-opens for the "
                 "new change set, showing what changed, then plan and the execute tasks run again")


def check_approval(run: Run, claimed_hash: str | None, summary: dict) -> Grant:
    """Refuse unless the files (and placeholders) are exactly what was approved, and the approval is
    on record and still valid now; plan and every execute task call this, possibly hours later.

    Files changed since the approval (the on-call fixed a typo and cleared the failed task): where
    the policy approves automatically the new change set is evaluated as validate would and, if it
    passes, approved again on record; where people must approve, the refusal names the task to clear."""
    current = run.changeset_hash()
    if not claimed_hash:
        raise PolicyRefused("no approval recorded in this run (the approve task pushed no change-set hash)",
                            hint=CLEAR_APPROVE)
    if current != claimed_hash:
        return changed_since_approval(run, claimed_hash, current, summary)
    if run.policy.approvals.required == 0 and not run.params.override and \
            not (run.policy.approvals.compliance_roles and summary.get("regulated")):
        return Grant(current)
    decision = approval_status(run, current, summary)
    if decision.status != "approved":
        run.emit("refused", details={"reason": "no valid approval on record", "changeset_hash": current,
                                     "decision": decision.to_dict()})
        raise PolicyRefused(f"no valid approval on record for change set {current[:12]} in this run: "
                            + "; ".join(decision.reasons + decision.ignored), hint=CLEAR_APPROVE)
    return Grant(current, tuple(decision.approved_by), decision.override, "approvals")


def files_of(run: Run, summary: dict, changeset_hash: str) -> dict[str, str] | None:
    """The file digests of an earlier change set of this run: from ``summary`` when it is that one,
    else from its ``validated`` event in the audit store (None: nowhere on record)."""
    if summary.get("changeset_hash") == changeset_hash and summary.get("files") is not None:
        return summary["files"]
    query = getattr(run.sink, "query", None)
    if query is None or not run.who.run_id:
        return None
    for r in reversed(query(domain=run.domain.name, environment=run.environment.name, run_id=run.who.run_id,
                            kind=["validated"])):
        if r.event.details.get("changeset_hash") == changeset_hash and r.event.details.get("files") is not None:
            return r.event.details["files"]
    return None


def _events(run: Run, kind: str) -> list:
    """This run's audit events of ``kind``, oldest first (none without an audit store)."""
    query = getattr(run.sink, "query", None)
    if query is None or not run.who.run_id:
        return []
    return [r.event for r in query(domain=run.domain.name, environment=run.environment.name,
                                   run_id=run.who.run_id, kind=[kind])]


def _approved_events(run: Run) -> list:
    return [e for e in _events(run, "approved") if e.details.get("gate") != "contract"]


def last_approved_hash(run: Run, other_than: str) -> str | None:
    """The change set most recently approved in this run (by people or automatically), other than ``other_than``."""
    for e in reversed(_approved_events(run)):
        h = e.details.get("changeset_hash")
        if h and h != other_than and (e.details.get("automatic") or e.details.get("counted")):
            return h
    return None


def changed_since_approval(run: Run, approved_hash: str, current: str, summary: dict) -> Grant:
    """See ``check_approval``: the retry after a fix, per environment."""
    old_files = files_of(run, summary, approved_hash)
    previous = {"changeset_hash": approved_hash, "files": old_files}
    policy, override = run.policy, run.params.override
    # a promotion gate is checked by plan alone: a new change set there goes back through plan
    automatic = not policy.promotion_from and \
        evaluate(policy, change_set(run, summary, current), [], run.clock(), override=override).status == "approved"
    changes = None
    if automatic:
        if any(e.details.get("automatic") and e.details.get("changeset_hash") == current for e in _approved_events(run)):
            run.log.info("Change set %s was re-evaluated and approved automatically earlier in this run", current[:12])
            return Grant(current)
        new = validate(run, previous=previous)  # blocking findings refuse here, as at validate
        decision = evaluate(policy, change_set(run, new), [], run.clock(), override=override)
        changes = new.get("changes")
        if decision.status == "approved":
            run.log.info("Approved automatically again: the policy of %s needs no approval (change set %s → %s: %s)",
                         run.environment.name, approved_hash[:12], current[:12], describe_changes(changes))
            run.emit("approved", details={"changeset_hash": current, "previous_hash": approved_hash,
                                          "changes": changes, "automatic": True, "by": "policy",
                                          "required": 0, "override": override,
                                          "reason": "approvals.required: 0; re-evaluated after the files changed"})
            return Grant(current)
        if decision.status == "refused":
            refuse(run, decision.reasons, {"changeset_hash": current, "previous_hash": approved_hash})
    elif old_files is not None:
        changes = changes_between(old_files, file_digests(run))
    run.emit("refused", details={"reason": "the change set changed after approval", "changeset_hash": approved_hash,
                                 "current_hash": current, "changes": changes})
    why = (f"{run.environment.name} needs people to approve the new files, and approvals of the old ones do not "
           "count for them") if not automatic and policy.approvals.required else \
        (f"the new files must pass the promotion gate from {policy.promotion_from} in plan first"
         if policy.promotion_from else "the new files need the stricter approval")
    raise PolicyRefused(f"the change set changed after approval (approved {approved_hash[:12]}, files now "
                        f"{current[:12]}; {describe_changes(changes)}); {why}", hint=CLEAR_APPROVE)


def refuse(run: Run, reasons: list[str], details: dict) -> None:
    run.emit("refused", details={**details, "reason": "; ".join(reasons)})
    raise PolicyRefused("approval refused:\n  " + "\n  ".join(reasons))


# --- asking people (the DAG's approve task) ------------------------------------------------------

def request_approval(run: Run, summary: dict) -> dict | Pending:
    """The approve task's result when nobody needs to answer (any more), else what to ask."""
    params = run.params
    request = {"changeset_hash": summary.get("changeset_hash") or "", "triggered_by": run.who.triggered_by,
               "override": params.override, "reason": params.override_reason}
    if not request["changeset_hash"]:
        raise PolicyRefused("the validate task pushed no change-set hash; clear validate first")
    revalidated = reevaluate(run, summary)
    if revalidated is not None:  # cleared after a fix: the request is for the files as they are now
        summary = revalidated
        request["changeset_hash"] = summary["changeset_hash"]
        request["summary"] = summary
    change = change_set(run, summary)
    decision = evaluate(run.policy, change, [], run.clock(), override=params.override)
    base = {"changeset_hash": change.hash, "required": decision.required, "override": params.override}
    if decision.status == "approved":
        run.log.info("Approved automatically: the environment's policy needs no approval")
        run.emit("approved", details={**base, "automatic": True, "reason": "approvals.required: 0", "by": "policy",
                                      **_what_changed(summary)})
        return {"approved": True, "automatic": True, "approved_by": [], **base, **_carried(request)}
    if decision.status == "refused":
        refuse(run, decision.reasons, base)

    ap = run.policy.approvals
    exclude = None if ap.triggerer_may_approve else change.triggered_by
    approvers = load_approvers(run.project.root)
    people = approvers.eligible(eligible_roles(ap, change, override=params.override), ap.users, exclude=exclude)
    if decision.compliance_required:
        # a regulated change: the compliance sign-off is asked for in the same request
        compliance = approvers.eligible(ap.compliance_roles, exclude=exclude)
        if not compliance:
            refuse(run, [f"the change set makes {change.regulated} regulated change(s) to labelled data, which need a "
                         f"sign-off from a holder of role {' or '.join(ap.compliance_roles)}, and nobody holds it; add "
                         "one to migration_specs/approvers.yaml"], base)
        people = sorted(set(people) | set(compliance))
    if len(people) < decision.required:
        refuse(run, [f"needs {decision.required} distinct approver(s) but only {len(people)} may approve "
                     f"({', '.join(people) or 'nobody'}) under the policy of {run.environment.name}"
                     + (f", {exclude} excluded as the triggering user" if exclude else "")
                     + "; add people with the required roles to migration_specs/approvers.yaml"], base)
    request["eligible"] = people
    prior, rejections = recorded_answers(run.sink, run.domain.name, run.environment.name, run.who.run_id, change.hash)
    if rejections:
        r = rejections[-1]
        refuse(run, [f"rejected earlier in this run by {r['user']}" + (f": {r['comment']}" if r["comment"] else "")
                     + "; a rejection stands (trigger a new run)"], {"changeset_hash": change.hash})
    if prior:
        # a new try of the approve task (cleared, or failed by Airflow while parked): the answers already
        # given for this very change set still count, so approvers are not asked twice
        decision = decide(run, change, prior, params.override)
        run.log.info("Approvals recorded earlier in this run for %s: %s", change.hash[:12],
                     ", ".join(a["user"] for a in prior))
        if decision.status == "approved":
            return _granted(run, change, decision, request, base)
    preview = _preview(run)
    body = summary_markdown(run.domain.name, run.environment.name, summary, decision, people, change.triggered_by,
                            preview, params.override_reason)
    earlier = {e.details.get("changeset_hash") for e in _events(run, "approval_requested")} - {change.hash}
    if earlier:
        # Airflow 3.3.2 keeps the first request text of a task instance when it is cleared (apache/airflow
        # #73235): approvers would read the old files' summary. The new one goes to this try's log, and an
        # approval counts only if it quotes the new hash, proof that its author read the right summary.
        request["quote"] = change.hash[:QUOTE]
        run.log.info("The request re-opens for change set %s (the files changed). Airflow still shows the first "
                     "request's text; this is what the approvers must read, and an approval counts only if its "
                     "comment quotes %s:\n\n%s", change.hash[:12], request["quote"], body)
    else:
        run.log.info("What the approvers read:\n\n%s", body)
    run.log.info("Waiting for %d approval(s) from %s (Browse → Required Actions)", decision.required, people)
    run.emit("approval_requested", details={**base, "eligible": people, "escalated": decision.escalated,
                                            **_compliance(decision, summary),
                                            "reason": params.override_reason, **_what_changed(summary),
                                            **({"quote": request["quote"]} if earlier else {}),
                                            # the estimate approvers were shown: the audit page puts the
                                            # rehearsal trend of each file next to it
                                            **({"rehearsal": preview["rehearsal"]} if preview.get("rehearsal") else {})})
    return Pending(request, decision, body, prior)


def reevaluate(run: Run, summary: dict) -> dict | None:
    """The approve task runs again (cleared) and the files changed since validate: the new change
    set evaluated as validate would, with what changed since the last approval in this run (or since
    validate). None when nothing changed."""
    current = run.changeset_hash()
    if current == summary.get("changeset_hash"):
        return None
    since = last_approved_hash(run, current) or summary["changeset_hash"]
    return validate(run, previous={"changeset_hash": since, "files": files_of(run, summary, since)})


def _what_changed(summary: dict) -> dict:
    return {k: summary[k] for k in ("previous_hash", "changes") if k in summary}


def _carried(request: dict) -> dict:
    """The re-evaluated summary travels with the approval, so plan and execute check against it."""
    return {"summary": request["summary"]} if request.get("summary") else {}


def record_answer(run: Run, request: dict, approvals: list[dict], summary: dict) -> dict | Pending:
    """One more answer (the last of ``approvals``): recorded, then the policy decides again."""
    summary = request.get("summary") or summary
    answer = approvals[-1]
    base = {"changeset_hash": request["changeset_hash"], "override": request.get("override", False)}
    current = run.changeset_hash()
    if current != request["changeset_hash"]:
        refuse(run, ["the change set changed while waiting for approval (hash "
                     f"{current[:12]}, approvers saw {request['changeset_hash'][:12]}); " + CLEAR_APPROVE],
               {**base, "current_hash": current})
    change = change_set(run, summary, request["changeset_hash"])
    override = bool(request.get("override"))
    user, comment = answer["user"], answer.get("comment", "")
    quote = request.get("quote")
    if quote and answer["decision"] == "approve" and quote not in comment:
        approvals = approvals[:-1]  # kept out of the next answers' count too
        why = (f"{user}: approved without quoting change set {quote} in the comment (the request text Airflow "
               "shows is the one before the files changed; the new summary is in the approve task's log)")
        run.emit("approved", details={**base, "by": user, "counted": False, "comment": comment, "not_counted": why})
        run.log.info("not counted: %s", why)
        return Pending(request, decide(run, change, approvals, override), "", approvals)
    decision = decide(run, change, approvals, override)
    before = decide(run, change, approvals[:-1], override)
    if answer["decision"] == "reject" and decision.status == "refused":
        run.emit("rejected", details={**base, "by": user, "reason": comment or "no comment given"})
        raise PolicyRefused("change set rejected:\n  " + "\n  ".join(decision.reasons))
    counted = len(decision.approved_by) > len(before.approved_by)  # this answer, not an earlier one
    why = [i for i in decision.ignored if i.startswith(f"{user}:")]
    sign_off = user in decision.signed_off_by and user not in before.signed_off_by
    counted = counted or sign_off  # a sign-off is read back from the store like any counted answer
    run.emit("approved", details={**base, "by": user, "counted": counted, "comment": comment,
                                  **({"sign_off": True} if sign_off else {}),
                                  "approved_by": decision.approved_by, "required": decision.required,
                                  **_compliance(decision, summary),
                                  **({"not_counted": why[-1]} if not counted and why else {})})
    if decision.status == "refused":
        refuse(run, decision.reasons, base)
    if decision.status == "approved":
        return _granted(run, change, decision, request, base)
    run.log.info("%s answered%s; still waiting: %s%s", user, "" if counted else " (not counted)",
                 "; ".join(decision.reasons), "".join(f"\n  not counted: {i}" for i in decision.ignored))
    return Pending(request, decision, "", approvals)


def _granted(run: Run, change: ChangeSet, decision: Decision, request: dict, base: dict) -> dict:
    if decision.override:
        run.emit("overridden", details={**base, "by": ", ".join(decision.approved_by), "reason": request.get("reason"),
                                        "gate": "approval", "how": "approvals", "approved_by": decision.approved_by})
    run.log.info("Approved by %s for change set %s", ", ".join(decision.approved_by), change.hash[:12])
    return {"approved": True, "automatic": False, "approved_by": decision.approved_by,
            "required": decision.required, "decision": decision.status, **base, **_carried(request),
            **({"signed_off_by": decision.signed_off_by} if decision.compliance_required else {})}


def _compliance(decision: Decision, summary: dict) -> dict:
    """What an event says about a regulated change: that it needs a compliance sign-off, which changes,
    and who signed off so far (the compliance report reads it from the audit store)."""
    if not decision.compliance_required:
        return {}
    return {"compliance_required": True, "signed_off_by": decision.signed_off_by,
            "regulated": summary.get("regulated") or []}


# --- where nobody can answer (the command line) ----------------------------------------------------

def authorize(run: Run, summary: dict) -> Grant:
    """The policy alone decides: automatic where it needs nobody; an emergency override breaks the glass
    only where ``policy.emergency.cli`` allows it, recorded as ``overridden`` with who and why; a run
    that needs approvals is refused, naming the DAG that collects them."""
    from polymigrate.blueprint import dag_id

    params, policy = run.params, run.policy
    change = change_set(run, summary)
    decision = evaluate(policy, change, [], run.clock())
    base = {"changeset_hash": change.hash, "required": decision.required, "override": params.override}
    dag = dag_id(run.domain.name, run.environment.name)
    if params.override:
        if not policy.emergency.cli:
            refuse(run, [f"the policy of {run.environment.name} does not allow an emergency override from the command "
                         f"line (policy.emergency.cli); trigger the DAG {dag} with emergency_override and a reason "
                         "instead (it needs the stricter approval)"], base)
        bypassed = decision.reasons if decision.status != "approved" else []
        run.log.warning("EMERGENCY OVERRIDE by %s (%s): %s", run.who.actor, params.override_reason,
                        "; ".join(bypassed) or "nothing the policy would refuse")
        run.emit("overridden", details={**base, "by": run.who.actor, "reason": params.override_reason,
                                        "gate": "approval", "how": "break_glass", "bypassed": bypassed})
        return Grant(change.hash, (run.who.actor,), True, "break_glass")
    if decision.status == "approved":
        run.emit("approved", details={**base, "automatic": True, "reason": "approvals.required: 0", "by": "policy"})
        return Grant(change.hash)
    if decision.status == "waiting":
        reasons = [f"{run.environment.name} requires {decision.required} approval(s), which the command line cannot "
                   f"collect: trigger the DAG {dag}"
                   + (", or break the glass with --emergency-override --reason …" if policy.emergency.cli else "")]
    else:
        reasons = decision.reasons
    refuse(run, reasons, base)
    raise AssertionError("unreachable")  # refuse raises


# --- what the approvers read -------------------------------------------------------------------------

def _preview(run: Run) -> dict[str, Any]:
    """Pending per region and technology, and what staging has not run; never fails the request."""
    try:
        params = run.params
        plan = plan_domain(run.project, run.domain, run.catalog, run.environment,
                           run.connector.connect(run.environment, run.domain, params.technologies),
                           regions=params.regions, target_version=params.target_version,
                           out_of_order=params.allow_out_of_order)
        plan.targets = [t for t in plan.targets if params.selects(t.region, t.technology)]
        regions: dict[str, dict[str, Any]] = {}
        for t in plan.targets:
            regions.setdefault(t.region, {})[t.technology] = "?" if t.error else len(t.steps)
        out: dict[str, Any] = {"regions": regions}
        if plan.problems:  # one per line, whole: a cut sentence (or a '_' of a connection id) misled approvers
            out["problems"] = plan.problems[:PROBLEMS_SHOWN]
        if run.policy.promotion_from:
            out["staging_env"] = run.policy.promotion_from
            out["staging"] = promotion_check(run, plan)
        try:
            rehearsal = rehearsal_by_region(run, plan)
        except Exception as exc:  # noqa: BLE001  an estimate is advice: the window check enforces
            run.log.warning("rehearsal estimate not available: %s", exc)
            rehearsal = None
        if rehearsal and rehearsal["regions"]:
            out["rehearsal"] = rehearsal
        return out
    except Exception as exc:  # the approver still sees the files and lint; the plan task enforces
        run.log.warning("preview not available: %s", exc)
        return {"error": str(exc)[:300]}
