"""The separate approval of a release's contract phase (``policy.contract_approval``, docs/phases.md).

The change set's approval lets a release start; the contract phase drops what the old application
needs, so where the policy says so it waits in each region, after that region's earlier phases
verified, for people to confirm that the new application runs well on the expanded schema. The
DAG's ``<region>.approve_contract`` task asks (Airflow's human-in-the-loop, as ``approve`` does),
every answer is recorded in the audit store as ``approved`` / ``rejected`` with
``details.gate = "contract"`` and the region, and every contract task checks it there again before
touching a target, so clearing only a contract task cannot skip it.

Who may answer and how many: the environment's ``approvals`` (roles, users, four-eyes, expiry), at
least one person, without the risk escalation (the change set's approval already weighed the
contract files).
"""

from __future__ import annotations

from dataclasses import dataclass

from polymigrate.commands.approval import Pending, change_set, check_approval, refuse, when
from polymigrate.commands.context import Grant, Run
from polymigrate.errors import PolicyRefused
from polymigrate.policy import Approval, ChangeSet, Decision, eligible_roles, evaluate
from polymigrate.spec.approvers import load_approvers
from polymigrate.spec.models import Policy

GATE = "contract"
TASK = "approve_contract"  # the region group's task (polymigrate.blueprint)


def contract_policy(policy: Policy) -> Policy:
    """The environment's approval rules for the contract go-ahead: at least one person."""
    ap = policy.approvals
    return policy.model_copy(update={"approvals": ap.model_copy(update={
        "required": max(1, ap.required), "high_risk_required": None, "high_risk_roles": []})})


def _change(run: Run, summary: dict, changeset_hash: str | None = None) -> ChangeSet:
    c = change_set(run, summary, changeset_hash)
    # the change set's own approval weighed risk and destructive files; this one confirms the timing
    return ChangeSet(domain=c.domain, environment=c.environment, hash=c.hash, triggered_by=c.triggered_by)


def _decide(run: Run, change: ChangeSet, answers: list[dict]) -> Decision:
    people = load_approvers(run.project.root)
    given = [Approval(a["user"], a["decision"], a["hash"], when(a["at"]), people.roles_of(a["user"]),
                      a.get("comment", "")) for a in answers]
    return evaluate(contract_policy(run.policy), change, given, run.clock())


def recorded(run: Run, region: str, changeset_hash: str) -> tuple[list[dict], list[dict]]:
    """(approvals, rejections) of this region's contract phase in this run, from the audit store."""
    query = getattr(run.sink, "query", None)
    if query is None or not run.who.run_id:
        return [], []
    approvals: dict[str, dict] = {}
    rejections: list[dict] = []
    for r in query(domain=run.domain.name, environment=run.environment.name, run_id=run.who.run_id,
                   kind=["approved", "rejected"]):
        e, d = r.event, r.event.details
        if d.get("gate") != GATE or e.region != region or d.get("changeset_hash") != changeset_hash or not d.get("by"):
            continue
        answer = {"user": d["by"], "decision": "approve" if e.kind == "approved" else "reject", "hash": changeset_hash,
                  "at": e.at.isoformat(), "comment": d.get("comment") or d.get("reason") or ""}
        if e.kind == "rejected":
            rejections.append(answer)
        elif d.get("counted"):
            approvals.setdefault(d["by"], answer)
    return list(approvals.values()), rejections


def contract_files(run: Run, region: str) -> dict[str, list[str]]:
    """The contract-phase files of each technology the region runs."""
    out: dict[str, list[str]] = {}
    for tech in run.technologies(region):
        files = [m.script for m in run.catalog.applicable(tech) if m.phase == GATE]
        if files:
            out[tech] = files
    return out


def request_contract_approval(run: Run, region: str, summary: dict) -> dict | Pending:
    """The approve_contract task: approved at once where the policy needs no separate approval (or in a
    dry run), else what to ask and whom; answers already on record for this region count."""
    current = run.changeset_hash()
    base = {"gate": GATE, "changeset_hash": current}
    if not run.policy.contract_approval or run.params.dry_run:
        why = "policy.contract_approval is off" if not run.policy.contract_approval else "dry run: nothing is dropped"
        run.log.info("%s: the contract phase needs no separate approval (%s)", region, why)
        return {"approved": True, "automatic": True, "approved_by": [], "region": region, **base}
    if summary.get("changeset_hash") and current != summary["changeset_hash"]:
        refuse(run, [f"{region}: the files changed since this run's approval (now {current[:12]}); clear the "
                     "`approve` task with its downstream tasks"], base)
    change = _change(run, summary, current)
    policy = contract_policy(run.policy)
    ap = policy.approvals
    exclude = None if ap.triggerer_may_approve else change.triggered_by
    people = load_approvers(run.project.root).eligible(eligible_roles(ap, change), ap.users, exclude=exclude)
    prior, rejections = recorded(run, region, current)
    if rejections:
        r = rejections[-1]
        refuse(run, [f"{region}: the contract phase was rejected earlier in this run by {r['user']}"
                     + (f": {r['comment']}" if r["comment"] else "") + "; a rejection stands (trigger a new run)"], base)
    decision = _decide(run, change, prior)
    if decision.status == "approved":
        return _granted(run, region, decision, base)
    if len(people) < decision.required:
        refuse(run, [f"{region}: the contract phase needs {decision.required} approver(s) but only {len(people)} may "
                     f"approve ({', '.join(people) or 'nobody'}); add people to migration_specs/approvers.yaml"], base)
    body = contract_summary_markdown(run, region, decision, people)
    run.log.info("What the approvers read:\n\n%s", body)
    run.emit("approval_requested", region=region, details={**base, "required": decision.required, "eligible": people,
                                                           "files": contract_files(run, region)})
    request = {"changeset_hash": current, "triggered_by": change.triggered_by, "eligible": people, "region": region}
    return Pending(request, decision, body, prior)


def record_contract_answer(run: Run, region: str, request: dict, approvals: list[dict]) -> dict | Pending:
    """One more answer to the contract request (the last of ``approvals``): recorded, then decided."""
    base = {"gate": GATE, "changeset_hash": request["changeset_hash"]}
    current = run.changeset_hash()
    if current != request["changeset_hash"]:
        refuse(run, [f"{region}: the files changed while waiting for the contract approval (now {current[:12]})"],
               {**base, "current_hash": current})
    change = _change(run, {}, request["changeset_hash"])
    answer = approvals[-1]
    decision = _decide(run, change, approvals)
    before = _decide(run, change, approvals[:-1])
    if answer["decision"] == "reject":
        run.emit("rejected", region=region, details={**base, "by": answer["user"],
                                                     "reason": answer.get("comment") or "no comment given"})
        raise PolicyRefused(f"{region}: contract phase rejected by {answer['user']}"
                            + (f": {answer['comment']}" if answer.get("comment") else "")
                            + "; its earlier phases stay applied (trigger a new run to ask again)")
    counted = len(decision.approved_by) > len(before.approved_by)
    why = [i for i in decision.ignored if i.startswith(f"{answer['user']}:")]
    run.emit("approved", region=region, details={**base, "by": answer["user"], "counted": counted,
                                                 "comment": answer.get("comment", ""),
                                                 "approved_by": decision.approved_by, "required": decision.required,
                                                 **({"not_counted": why[-1]} if not counted and why else {})})
    if decision.status == "approved":
        return _granted(run, region, decision, base)
    run.log.info("%s answered%s; still waiting: %s", answer["user"], "" if counted else " (not counted)",
                 "; ".join(decision.reasons + decision.ignored))
    return Pending(request, decision, "", approvals)


def _granted(run: Run, region: str, decision: Decision, base: dict) -> dict:
    run.log.info("%s: contract phase approved by %s", region, ", ".join(decision.approved_by))
    return {"approved": True, "automatic": False, "approved_by": decision.approved_by, "region": region, **base}


def check_contract_approval(run: Run, region: str) -> tuple[str, ...]:
    """Before a contract task touches a target: the region's contract approval is on record now (who
    approved), or ``PolicyRefused`` naming the task to clear. Nothing to check where the policy has
    no separate approval, or in a dry run (an emergency override of the change set's approval does
    not waive this one: the approve_contract task asks under it too)."""
    if not run.policy.contract_approval or run.params.dry_run:
        return ()
    current = run.changeset_hash()
    if getattr(run.sink, "query", None) is None:
        raise PolicyRefused(f"{region}: the contract phase needs a separate approval, read from the audit store, "
                            "and none is configured", hint="configure the audit store (connection 'polymigrate_audit')")
    approvals, rejections = recorded(run, region, current)
    decision = _decide(run, _change(run, {}, current), approvals + rejections)
    if decision.status != "approved":
        run.emit("refused", region=region, details={"gate": GATE, "changeset_hash": current,
                                                    "reason": "no valid contract approval on record",
                                                    "decision": decision.to_dict()})
        raise PolicyRefused(f"{region}: no valid approval of the contract phase on record for change set "
                            f"{current[:12]} in this run: " + "; ".join(decision.reasons + decision.ignored),
                            hint=f"clear the task `{region}.{TASK}` with its downstream tasks and approve it "
                                 "(Browse → Required Actions)")
    return tuple(decision.approved_by)


def contract_summary_markdown(run: Run, region: str, decision: Decision, eligible: list[str]) -> str:
    files = contract_files(run, region)
    rows = "\n".join(f"| {tech} | {', '.join(f'`{f}`' for f in scripts)} |" for tech, scripts in files.items())
    soak = run.policy.contract_soak_minutes
    who = ", ".join(eligible) or "nobody"
    return f"""### Contract phase of {run.domain.name} in {run.environment.name} / {region}

The expand and migrate phases are applied and verified in **{region}**. The contract phase drops what
only the old application needs: approve once every application version running in {region} reads
and writes the new shape only. Nothing of it can be undone by an undo file.

| technology | contract files |
|---|---|
{rows or "| - | none |"}

This needs **{decision.required}** approval(s) from: {who}.{" Then " + format(soak, "g") + " min of soak (policy.contract_soak_minutes) from the verify." if soak else ""}
Rejecting keeps the earlier phases applied and stops this region's contract.
"""


@dataclass
class RecordedApprovals:
    """The DAG's approvals (``gates.before_target``): the answers people gave in the approve tasks, read
    back from the audit store at the moment of the check (a task's XCom only claims which change set
    was approved)."""

    claimed_hash: str | None
    summary: dict

    def change_set(self, run: Run) -> Grant:
        return check_approval(run, self.claimed_hash, self.summary)

    def contract(self, run: Run, region: str) -> None:
        check_contract_approval(run, region)
