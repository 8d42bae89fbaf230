"""The command layer's policy decisions, without Airflow and without a server.

Each test builds a small spec tree, opens a ``Run`` on it and asks one gate. Events go to a
recorder that also answers queries, as the audit store does, so approvals "on record" can be
written and read back; no target is ever touched by these gates.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from polymigrate.commands import Connector, RunParams, UsageError, Who, open_run
from polymigrate.commands.adhoc import bound_environment
from polymigrate.commands.approval import authorize, check_approval, record_answer, request_approval
from polymigrate.commands.verbs import summarize, validate
from polymigrate.errors import PermanentError, PolicyRefused
from polymigrate.events import AuditEvent
from polymigrate.spec import load_project
from tests.recording import RecordingSink

NOW = datetime(2026, 11, 9, 0, 54, tzinfo=timezone.utc)  # a Monday, six minutes before the window


class NoTargets(Connector):
    """These gates must decide before any target is opened."""

    def open(self, environment, region, technology, domain):
        raise AssertionError(f"{region}/{technology} opened by a gate that must not touch targets")

    def how_to_configure(self, conn_id: str) -> str:
        return "n/a"


@pytest.fixture
def specs(tmp_path) -> Path:
    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "production.yaml").write_text(textwrap.dedent("""\
        regions: {p1: null}
        policy:
          approvals: {required: 2, roles: [dba], triggerer_may_approve: false, expiry_hours: 24}
          destructive_allowed: false
          lint_block_at: critical
          promotion_from: staging
          window: {days: [mon], start: "01:00", end: "05:00", timezone: UTC}
        """))
    (root / "environments" / "staging.yaml").write_text("regions: {s1: null}\npolicy: {audit_required: true}\n")
    (root / "environments" / "testing.yaml").write_text("regions: {t1: null}\npolicy: {lint_block_at: high}\n")
    (root / "approvers.yaml").write_text("users:\n  ann: [dba]\n  bob: [dba]\n  olga: [dba]\n")
    (root / "shop" / "postgresql").mkdir(parents=True)
    (root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql: {}\n")
    (root / "shop" / "postgresql" / "V1__customers.sql").write_text(
        "CREATE TABLE customers (id bigint PRIMARY KEY, first_name text);\n")
    return root


def drop_a_column(specs: Path) -> None:
    (specs / "shop" / "postgresql" / "V2__drop_first_name.sql").write_text("ALTER TABLE customers DROP COLUMN first_name;\n")


def production(specs: Path, *, emergency_cli: bool) -> None:
    path = specs / "environments" / "production.yaml"
    path.write_text(path.read_text() + f"  emergency: {{cli: {str(emergency_cli).lower()}}}\n")


def run_in(specs: Path, environment: str, params: RunParams | None = None, who: Who | None = None):
    sink = RecordingSink()
    run = open_run(specs, "shop", environment, params=params or RunParams(),
                   who=who or Who("ann@laptop", "ann@laptop", "cli-1", origin="cli"), connector=NoTargets(), audit=None,
                   clock=lambda: NOW)
    run.sink = sink  # what the audit store would hold
    return run, sink


def test_the_command_line_cannot_collect_approvals_so_it_refuses_naming_the_dag(specs):
    production(specs, emergency_cli=False)
    run, sink = run_in(specs, "production")
    with pytest.raises(PolicyRefused) as info:
        authorize(run, validate(run))
    assert "production requires 2 approval(s)" in str(info.value)
    assert "migrate__shop__production" in str(info.value) and "--emergency-override" not in str(info.value)
    assert sink.kinds() == ["validated", "refused"]


def test_a_destructive_change_is_refused_where_the_policy_bans_it(specs):
    drop_a_column(specs)
    run, sink = run_in(specs, "production")
    summary = validate(run)
    assert summary["destructive"] is True
    with pytest.raises(PolicyRefused, match="destructive changes are not allowed in production"):
        authorize(run, summary)
    assert sink.events[-1].kind == "refused"


def test_break_glass_needs_the_policy_to_allow_it(specs):
    production(specs, emergency_cli=False)
    run, sink = run_in(specs, "production", RunParams(override=True, override_reason="INC-4711 checkout is down"))
    with pytest.raises(PolicyRefused, match="policy.emergency.cli"):
        authorize(run, validate(run))
    assert "overridden" not in sink.kinds()


def test_break_glass_records_who_and_why_and_what_it_bypassed(specs):
    drop_a_column(specs)
    production(specs, emergency_cli=True)
    run, sink = run_in(specs, "production", RunParams(override=True, override_reason="INC-4711 checkout is down"))
    grant = authorize(run, validate(run))
    assert grant.how == "break_glass" and grant.override and grant.approved_by == ("ann@laptop",)
    overridden = sink.events[-1]
    assert overridden.kind == "overridden" and overridden.actor == "ann@laptop"
    assert overridden.details["by"] == "ann@laptop" and overridden.details["reason"] == "INC-4711 checkout is down"
    assert any("destructive" in b for b in overridden.details["bypassed"])


def test_an_override_needs_a_reason_an_auditor_can_follow():
    with pytest.raises(UsageError, match="--emergency-override needs --reason"):
        RunParams(override=True, override_reason="fix").checked(RunParams.CLI_NAMES)
    with pytest.raises(UsageError, match="param emergency_override needs emergency_reason"):
        RunParams.from_params({"emergency_override": True})
    with pytest.raises(UsageError, match="param regions is empty"):
        RunParams.from_params({"regions": []})
    with pytest.raises(UsageError, match="--target: invalid version"):
        RunParams(target_version="v2").checked(RunParams.CLI_NAMES)


def test_where_nobody_must_approve_the_run_is_approved_automatically_and_recorded(specs):
    run, sink = run_in(specs, "testing")
    grant = authorize(run, validate(run))
    assert grant.how == "policy" and not grant.override
    assert sink.events[-1].kind == "approved" and sink.events[-1].details["automatic"] is True


def test_blocking_lint_refuses_at_validate_and_an_override_carries_it_to_approval(specs):
    drop_a_column(specs)  # ban-drop-column: high, and testing blocks at high
    run, sink = run_in(specs, "testing")
    with pytest.raises(PolicyRefused, match="block testing"):
        validate(run)
    assert sink.kinds() == ["refused"]
    run, sink = run_in(specs, "testing", RunParams(override=True, override_reason="INC-4711 checkout is down"))
    assert validate(run)["lint"]["blocking"] >= 1 and sink.kinds() == ["validated"]


def record_approval(sink: RecordingSink, who: str, changeset: str, at: datetime = NOW, run_id: str = "manual__1") -> None:
    sink.emit(AuditEvent(kind="approved", domain="shop", environment="production", run_id=run_id, at=at,
                         details={"by": who, "counted": True, "changeset_hash": changeset}))


def airflow_run(specs: Path, params: RunParams | None = None):
    return run_in(specs, "production", params, Who("olga@airflow", "olga", "manual__1", dag_id="migrate__shop__production"))


def test_a_claimed_approval_counts_only_as_far_as_the_audit_store_confirms_it(specs):
    run, sink = airflow_run(specs)
    summary = validate(run)
    changeset = summary["changeset_hash"]
    with pytest.raises(PolicyRefused, match="no valid approval on record"):
        check_approval(run, changeset, summary)  # an XCom claims it; nothing is on record
    record_approval(sink, "ann", changeset)
    record_approval(sink, "olga", changeset)  # triggered the run: four-eyes
    with pytest.raises(PolicyRefused, match="olga: triggered this run"):
        check_approval(run, changeset, summary)
    record_approval(sink, "bob", changeset)
    grant = check_approval(run, changeset, summary)
    assert grant.approved_by == ("ann", "bob") and grant.how == "approvals"


def test_approvals_expire_and_bind_to_the_change_set(specs):
    run, sink = airflow_run(specs)
    summary = validate(run)
    changeset = summary["changeset_hash"]
    for who in ("ann", "bob"):
        record_approval(sink, who, changeset, at=NOW - timedelta(hours=25))
    with pytest.raises(PolicyRefused, match="expired"):
        check_approval(run, changeset, summary)
    with pytest.raises(PolicyRefused, match="the change set changed after approval"):
        check_approval(run, "0" * 64, summary)
    assert sink.events[-1].details["current_hash"] == changeset


def test_answers_already_on_record_are_not_asked_for_again(specs):
    run, sink = airflow_run(specs)
    summary = validate(run)
    record_approval(sink, "ann", summary["changeset_hash"])
    pending = request_approval(run, summary)
    assert pending.request["eligible"] == ["ann", "bob"]  # not olga, who triggered
    assert [a["user"] for a in pending.approvals] == ["ann"]
    assert "needs **2** approval(s)" in pending.body
    record_approval(sink, "bob", summary["changeset_hash"])
    assert request_approval(run, summary)["approved_by"] == ["ann", "bob"]


def test_an_adhoc_url_of_a_policy_bound_environment_is_recognised(specs, monkeypatch):
    project = load_project(specs)
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_P1", "postgresql://app:secret@127.0.0.1:5432/shop")
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_TESTING_T1", "postgresql://app@127.0.0.1:5432/test")
    env, where = bound_environment(project, "postgresql://someone@localhost/shop", "postgresql")
    assert env == "production" and "polymigrate_postgresql_production_p1" in where
    assert bound_environment(project, "postgresql://127.0.0.1/other", "postgresql") is None
    assert bound_environment(project, "postgresql://127.0.0.1/test", "postgresql") is None  # testing: no policy


def test_the_core_never_imports_airflow():
    code = ("import sys; import polymigrate.commands.verbs, polymigrate.commands.adhoc, polymigrate.cli; "
            "bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')); print(bad); "
            "sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_outside_the_window_the_command_line_refuses_saying_when_it_opens(specs):
    from polymigrate.commands.verbs import require_window

    run, sink = run_in(specs, "production")  # 00:54 on a Monday; the window opens at 01:00
    with pytest.raises(PolicyRefused, match=r"p1/postgresql: the execution window of production is closed.*"
                                            r"opens 2026-11-09T01:00:00\+00:00"):
        require_window(run, "p1", "postgresql", pending_only=False)  # undo: closed is closed
    assert sink.events[-1].details == {"reason": "the execution window of production is closed or too short for "
                                                 "what is pending", "gate": "window",
                                       "opens": "2026-11-09T01:00:00+00:00"}
    run, _ = run_in(specs, "production", RunParams(dry_run=True))
    require_window(run, "p1", "postgresql", pending_only=False)  # a dry run changes nothing: no window


# --- the on-call retry after a fix (issue 16.1) ------------------------------------------------------

def reopen(specs: Path, environment: str, sink: RecordingSink, who: Who):
    """The next task of the same run: it reads the files as they are now, into the same audit store."""
    run, _ = run_in(specs, environment, who=who)
    run.sink = sink
    return run


def fix_a_typo(specs: Path) -> None:
    (specs / "shop" / "postgresql" / "V1__customers.sql").write_text(
        "CREATE TABLE customers (id bigint PRIMARY KEY, first_name text, last_name text);\n")


def test_where_approval_is_automatic_a_retry_after_a_fix_is_re_evaluated_and_proceeds(specs):
    who = Who("dev@airflow", "dev", "manual__7", dag_id="migrate__shop__testing", task_id="t1.postgresql")
    run, sink = run_in(specs, "testing", who=who)
    summary = validate(run)
    approved = summary["changeset_hash"]
    assert authorize(run, summary).changeset_hash == approved
    fix_a_typo(specs)
    (specs / "shop" / "postgresql" / "V2__orders.sql").write_text("CREATE TABLE orders (id bigint PRIMARY KEY);\n")

    grant = check_approval(reopen(specs, "testing", sink, who), approved, summary)  # the cleared execute task
    assert grant.changeset_hash != approved and grant.how == "policy"
    again = [e for e in sink.events if e.kind == "approved"][-1]
    assert again.details["automatic"] is True and again.details["changeset_hash"] == grant.changeset_hash
    assert again.details["previous_hash"] == approved
    assert again.details["changes"] == {"added": ["postgresql/V2__orders.sql"], "removed": [],
                                        "changed": ["postgresql/V1__customers.sql"]}
    assert sink.kinds()[-2:] == ["validated", "approved"]  # linted as validate would, on record
    # the next execute task of the run finds the new change set approved: not linted or recorded twice
    check_approval(reopen(specs, "testing", sink, who), approved, summary)
    assert sink.kinds().count("approved") == 2


def test_where_approval_is_automatic_a_fix_with_blocking_findings_is_still_refused(specs):
    who = Who("dev@airflow", "dev", "manual__8", dag_id="migrate__shop__testing")
    run, sink = run_in(specs, "testing", who=who)
    summary = validate(run)
    drop_a_column(specs)  # ban-drop-column: high, and testing blocks at high
    with pytest.raises(PolicyRefused, match="block testing"):
        check_approval(reopen(specs, "testing", sink, who), summary["changeset_hash"], summary)
    assert sink.kinds()[-1] == "refused" and [e.kind for e in sink.events].count("approved") == 0


def test_where_people_approve_a_retry_after_a_fix_names_the_task_to_clear(specs):
    run, sink = airflow_run(specs)
    summary = validate(run)
    old = summary["changeset_hash"]
    for who in ("ann", "bob"):
        record_approval(sink, who, old)
    fix_a_typo(specs)
    with pytest.raises(PolicyRefused) as info:
        check_approval(reopen(specs, "production", sink, run.who), old, summary)
    message = str(info.value)
    assert "changed: postgresql/V1__customers.sql" in message
    assert "clear the task `approve` with its downstream tasks" in message and "Downstream" in message
    assert "trigger a new run" not in message and "migrate again" not in message  # no command-line words
    refused = sink.events[-1]
    assert refused.kind == "refused" and refused.details["changes"]["changed"] == ["postgresql/V1__customers.sql"]


def test_clearing_approve_reopens_the_request_for_the_new_files_showing_what_changed(specs):
    run, sink = airflow_run(specs)
    summary = validate(run)
    old = summary["changeset_hash"]
    first = request_approval(run, summary)
    assert "quote" not in first.request and "an approval counts only if its comment quotes" in first.body
    for who in ("ann", "bob"):
        record_approval(sink, who, old)
    fix_a_typo(specs)
    again = reopen(specs, "production", sink, run.who)  # the approve task's new try, validate not re-run
    pending = request_approval(again, summary)
    new = pending.request["changeset_hash"]
    assert new != old and new == again.changeset_hash()
    assert pending.approvals == []  # ann's and bob's approvals were for the old files
    # Airflow keeps the first request text: an approval counts only if it quotes the new hash
    assert pending.request["quote"] == new[:8]
    answer = {"user": "ann", "decision": "approve", "hash": new, "at": NOW.isoformat(), "comment": "fine"}
    still = record_answer(again, pending.request, [answer], summary)
    assert still.approvals == [] and "without quoting change set" in sink.events[-1].details["not_counted"]
    still = record_answer(again, pending.request, [{**answer, "comment": f"read {new[:8]}, fine"}], summary)
    assert [a["user"] for a in still.approvals] == ["ann"] and sink.events[-1].details["counted"] is True
    assert f"**Changed since the last approval** (`{old[:12]}` → `{new[:12]}`)" in pending.body
    assert "- changed: `postgresql/V1__customers.sql`" in pending.body
    assert pending.request["summary"]["changes"]["changed"] == ["postgresql/V1__customers.sql"]
    asked = [e for e in sink.events if e.kind == "approval_requested"][-1]
    assert asked.details["changeset_hash"] == new and asked.details["previous_hash"] == old
    # once two people approve the new files, plan's check passes against the summary approve carried
    for who in ("ann", "bob"):
        record_approval(sink, who, new)
    granted = request_approval(reopen(specs, "production", sink, run.who), summary)
    assert granted["changeset_hash"] == new and granted["summary"]["changeset_hash"] == new
    grant = check_approval(reopen(specs, "production", sink, run.who), new, granted["summary"])
    assert sorted(grant.approved_by) == ["ann", "bob"]


# --- what people read (issue 16.6) -------------------------------------------------------------------

def test_the_approval_summary_lists_the_findings_in_the_usual_technology_order_and_says_who_may_answer(specs):
    from polymigrate.commands.approval import summary_markdown
    from polymigrate.policy import Decision

    drop_a_column(specs)
    run, _ = airflow_run(specs)
    summary, _ = summarize(run)
    summary["migrations"] = {"redis": 1, "mongodb": 2, "postgresql": 2}  # a domain that runs redis first
    body = summary_markdown("shop", "production", summary, Decision("waiting", 2), ["ann", "bob"], "olga",
                            {"regions": {"p1": {"redis": 1, "mongodb": 0, "postgresql": 1}}})
    assert "| region | postgresql | mongodb | redis |" in body and "| p1 | 1 | 0 | 1 |" in body
    assert "**high** `ban-drop-column` in shop/postgresql/V2__drop_first_name.sql:1" in body, body
    assert 'Only ann, bob may answer' in body and "Access Denied" in body and "four-eyes" in body


def test_a_dry_run_never_reads_like_a_real_run():
    from polymigrate.commands.verbs import outcome_line
    from polymigrate.executor import RunResult

    result = RunResult("db", "postgresql", dry_run=True)
    result.applied = [{"version": "1", "script": "V1__a.sql", "ms": 0, "action": "would apply"}] * 9
    line = outcome_line("eu", "postgresql", result)
    assert "9 would apply" in line and "DRY RUN, nothing applied" in line and "now at" not in line
    assert "stays at version none (empty ledger)" in line


def test_the_count_of_files_never_rehearsed_matches_the_list():
    from polymigrate.commands.gates import listed

    assert listed(list("abcdef"), 5) == "a, b, c, d, e and 1 more"
    assert listed(list("abc"), 5) == "a, b, c"


def test_where_approval_is_automatic_clearing_approve_after_a_fix_approves_the_new_files_on_record(specs):
    who = Who("dev@airflow", "dev", "manual__9", dag_id="migrate__shop__testing", task_id="approve")
    run, sink = run_in(specs, "testing", who=who)
    summary = validate(run)
    assert request_approval(run, summary)["changeset_hash"] == summary["changeset_hash"]
    fix_a_typo(specs)
    again = request_approval(reopen(specs, "testing", sink, who), summary)
    assert again["automatic"] is True and again["changeset_hash"] != summary["changeset_hash"]
    assert again["summary"]["changes"]["changed"] == ["postgresql/V1__customers.sql"]  # carried to plan and execute
    approved = sink.events[-1]
    assert approved.kind == "approved" and approved.details["previous_hash"] == summary["changeset_hash"]
    assert check_approval(reopen(specs, "testing", sink, who), again["changeset_hash"], again["summary"]).how == "policy"


def phased(specs: Path, soak: float) -> None:
    path = specs / "environments" / "production.yaml"
    path.write_text(path.read_text() + f"  contract_soak_minutes: {soak}\n")
    (specs / "shop" / "domain.yaml").write_text("technologies:\n  postgresql: {phases: [expand, contract]}\n")
    (specs / "shop" / "postgresql" / "V1__customers.sql").write_text(
        "-- polymigrate: phase=expand\nCREATE TABLE customers (id bigint PRIMARY KEY, first_name text);\n")
    (specs / "shop" / "postgresql" / "V2__drop_first_name.sql").write_text(
        "-- polymigrate: phase=contract\n"
        "ALTER TABLE customers DROP COLUMN first_name;\n")


def test_contract_waits_for_its_soak_after_the_earlier_phases_verified(specs):
    from polymigrate.commands.verbs import contract_gate

    phased(specs, 30)
    run, _ = run_in(specs, "production")
    assert contract_gate(run, "p1", NOW - timedelta(minutes=10)) == NOW + timedelta(minutes=20)
    assert contract_gate(run, "p1", NOW - timedelta(minutes=31)) is None
    with pytest.raises(PermanentError, match="needs the earlier phases verified first"):
        contract_gate(run, "p1", None)
    run, _ = run_in(specs, "production", RunParams(dry_run=True))
    assert contract_gate(run, "p1", NOW) is None  # nothing is dropped by a dry run


def test_the_approval_summary_shows_the_release_phases(specs):
    from polymigrate.catalog import phase_counts
    from polymigrate.commands.approval import summary_markdown
    from polymigrate.policy import Decision

    phased(specs, 0)
    run, _ = run_in(specs, "production")
    phases = phase_counts(run.catalog, ["postgresql"])
    assert phases == {"expand": {"postgresql": 1}, "contract": {"postgresql": 1}}
    decision = Decision(status="waiting", required=2)
    text = summary_markdown("shop", "production", {"migrations": {"postgresql": 2}, "phases": phases}, decision, ["dba"],
                            "ann", {"regions": {}})
    assert "**Release phases**" in text and "expand (postgresql 1) → contract (postgresql 1); contract runs only " \
                                              "after the earlier phases verified" in text


def test_the_soak_counts_from_the_first_verify_after_the_earlier_phases_last_changed(specs):
    from polymigrate.commands.verbs import contract_gate, phase_verified_at

    phased(specs, 30)
    run, sink = run_in(specs, "production")

    def at(minutes_ago, kind, **details):
        sink.events.append(AuditEvent(kind=kind, domain="shop", environment="production", region="p1",
                                      details=details, at=NOW - timedelta(minutes=minutes_ago)))

    at(120, "migration_succeeded", phase="migrate")
    at(100, "verified", phase="migrate")
    at(5, "verified", phase="migrate")  # a later run verifying again does not restart the soak
    assert phase_verified_at(run, "p1") == NOW - timedelta(minutes=100)
    assert contract_gate(run, "p1", NOW) is None
    at(20, "migration_succeeded", phase="migrate")  # the earlier phases changed: the soak starts again
    at(10, "verified", phase="migrate")
    assert phase_verified_at(run, "p1") == NOW - timedelta(minutes=10)
    assert contract_gate(run, "p1", NOW) == NOW + timedelta(minutes=20)
    at(1, "migration_succeeded", phase="contract")  # contract files do not restart it
    assert phase_verified_at(run, "p1") == NOW - timedelta(minutes=10)


# --- the separate approval of the contract phase (policy.contract_approval) ---------------------------

def contract_approval(specs: Path) -> None:
    phased(specs, 0)
    path = specs / "environments" / "production.yaml"
    path.write_text(path.read_text() + "  contract_approval: true\n")
    # the contract file is a reviewed drop: waived with a reason, as production requires
    (specs / "shop" / "postgresql" / "V2__drop_first_name.sql").write_text(
        "-- polymigrate: phase=contract\n"
        "-- polymigrate:lint-ignore ban-drop-column reason: every application version reads full_name only\n"
        "ALTER TABLE customers DROP COLUMN first_name;\n")


def answer(user: str, decision: str = "approve", comment: str = "") -> dict:
    return {"user": user, "decision": decision, "hash": "", "at": NOW.isoformat(), "comment": comment}


def test_the_contract_phase_waits_for_its_own_approval_per_region_recorded_apart_from_the_change_set_s(specs):
    from polymigrate.commands.approval import approval_status
    from polymigrate.commands.contract_approval import (check_contract_approval, record_contract_answer,
                                                        request_contract_approval)

    contract_approval(specs)
    run, sink = airflow_run(specs)
    summary = validate(run)
    assert summary["contract_gates"] == {"soak_minutes": 0, "approval": True}
    # the change set's approvers read that the contract will be asked for again, region by region
    main = request_approval(run, summary)
    assert "contract runs only after the earlier phases verified in the region, and a separate approval of the " \
           "contract phase there" in main.body
    with pytest.raises(PolicyRefused, match="no valid approval of the contract phase on record") as refused:
        check_contract_approval(run, "p1")
    assert "p1.approve_contract" in refused.value.hint
    pending = request_contract_approval(run, "p1", summary)
    assert pending.request["eligible"] == ["ann", "bob"]  # olga triggered the run: four-eyes holds here too
    assert pending.decision.required == 2  # production's count, without the destructive escalation
    assert "`V2__drop_first_name.sql`" in pending.body and "Contract phase of shop in production / p1" in pending.body
    asked = sink.events[-1]
    assert (asked.kind, asked.region, asked.details["gate"]) == ("approval_requested", "p1", "contract")
    assert asked.details["files"] == {"postgresql": ["V2__drop_first_name.sql"]}

    request = {**pending.request, "changeset_hash": summary["changeset_hash"]}
    ann = {**answer("ann"), "hash": request["changeset_hash"]}
    still = record_contract_answer(run, "p1", request, [ann])
    assert still.decision.status == "waiting"
    bob = {**answer("bob", comment="new app on 100% of p1 since Monday"), "hash": request["changeset_hash"]}
    granted = record_contract_answer(run, "p1", request, [ann, bob])
    assert granted["approved_by"] == ["ann", "bob"] and granted["region"] == "p1"
    assert [(e.kind, e.region, e.details.get("gate"), e.details.get("by")) for e in sink.events[-2:]] == [
        ("approved", "p1", "contract", "ann"), ("approved", "p1", "contract", "bob")]
    assert check_contract_approval(run, "p1") == ("ann", "bob")
    # they approved p1's contract, not the change set, nor another region's contract
    assert approval_status(run, summary["changeset_hash"], summary).status == "waiting"
    with pytest.raises(PolicyRefused, match="p2: no valid approval of the contract phase"):
        check_contract_approval(run, "p2")
    # a new try of the task finds the answers on record and asks nobody again
    assert request_contract_approval(run, "p1", summary)["approved_by"] == ["ann", "bob"]


def test_a_rejected_contract_stands_and_the_earlier_phases_stay(specs):
    from polymigrate.commands.contract_approval import record_contract_answer, request_contract_approval

    contract_approval(specs)
    run, sink = airflow_run(specs)
    summary = validate(run)
    request = {**request_contract_approval(run, "p1", summary).request}
    with pytest.raises(PolicyRefused, match="p1: contract phase rejected by ann: old app still in p1"):
        record_contract_answer(run, "p1", request, [{**answer("ann", "reject", "old app still in p1"),
                                                     "hash": request["changeset_hash"]}])
    assert (sink.events[-1].kind, sink.events[-1].details["gate"]) == ("rejected", "contract")
    with pytest.raises(PolicyRefused, match="rejected earlier in this run by ann"):
        request_contract_approval(run, "p1", summary)


def test_without_the_policy_or_in_a_dry_run_the_contract_needs_no_separate_approval(specs):
    from polymigrate.commands.contract_approval import check_contract_approval, request_contract_approval

    phased(specs, 0)
    run, sink = airflow_run(specs)
    summary = validate(run)
    assert request_contract_approval(run, "p1", summary)["automatic"] is True
    assert check_contract_approval(run, "p1") == ()
    contract_approval(specs)
    run, _ = airflow_run(specs, RunParams(dry_run=True))
    assert request_contract_approval(run, "p1", validate(run))["automatic"] is True


def test_where_nobody_approves_change_sets_a_contract_approval_still_needs_one_person(specs):
    from polymigrate.commands.contract_approval import request_contract_approval

    contract_approval(specs)
    (specs / "environments" / "testing.yaml").write_text("regions: {t1: null}\npolicy: {contract_approval: true}\n")
    run, _ = run_in(specs, "testing", who=Who("olga@airflow", "olga", "manual__1", dag_id="migrate__shop__testing"))
    pending = request_contract_approval(run, "t1", validate(run))
    assert pending.decision.required == 1 and pending.request["eligible"] == ["ann", "bob", "olga"]


def test_the_command_line_stops_before_a_contract_that_needs_its_own_approval(specs):
    from polymigrate.commands.verbs import contract_approval_from_cli

    contract_approval(specs)
    run, sink = run_in(specs, "production")
    with pytest.raises(PolicyRefused, match="needs a separate approval") as refused:
        contract_approval_from_cli(run, "p1")
    assert "migrate__shop__production" in refused.value.hint
    assert (sink.events[-1].kind, sink.events[-1].details["gate"]) == ("refused", "contract")
    run, sink = run_in(specs, "production", RunParams(override=True, override_reason="INC-4711 disk full, drop now"))
    contract_approval_from_cli(run, "p1")
    assert (sink.events[-1].kind, sink.events[-1].details["how"]) == ("overridden", "break_glass")


def test_where_a_ledger_lives_does_not_depend_on_who_connects():
    from polymigrate.commands.planning import ledger_location

    assert ledger_location("postgresql://app@db.internal:5432/shop") == "postgresql://db.internal:5432/shop"
    assert ledger_location("postgresql://ro@db.internal:5432/shop") == ledger_location("postgresql://db.internal:5432/shop")
    assert ledger_location("mongodb://u:***@h:27017/shop") == "mongodb://h:27017/shop"
    assert ledger_location("http://h:9200 / polymigrate_shop") == "http://h:9200 / polymigrate_shop"


def test_the_approval_summary_reads_cleanly_issue_22_4(specs):
    """One suppression once, named as the repository names its file; unreadable ledgers and files not
    yet in staging one per line, whole (a connection id's underscores once ended Markdown italics)."""
    from polymigrate.commands.approval import summary_markdown
    from polymigrate.policy import Decision

    (specs / "shop" / "postgresql" / "V2__drop_names.sql").write_text(
        "-- polymigrate:lint-ignore ban-drop-column reason: the app stopped reading both in 4.2\n"
        "ALTER TABLE customers DROP COLUMN first_name, DROP COLUMN last_name;\n")
    run, _ = airflow_run(specs)
    summary, _ = summarize(run)
    sups = [s for s in summary["suppressions"] if s["rule"] == "ban-drop-column"]
    assert len(sups) == 1 and sups[0]["file"] == "shop/postgresql/V2__drop_names.sql", summary["suppressions"]
    assert sups[0]["count"] == 2  # one statement, two dropped columns: two findings, one line to read
    problem = ("p1/elasticsearch: ledger not read: connection 'polymigrate_elasticsearch_production_p1' is not "
               "configured")
    missing = [f"postgresql {n} V{n}__f.sql (checksum {n}) in staging region(s) s1" for n in range(1, 13)]
    body = summary_markdown("shop", "production", summary, Decision("waiting", 1), ["ann"], "olga",
                            {"regions": {"p1": {"postgresql": 1}}, "problems": [problem],
                             "staging_env": "staging", "staging": missing})
    assert body.count("suppressed `ban-drop-column`") == 1
    assert "suppressed `ban-drop-column` in shop/postgresql/V2__drop_names.sql:2" in body, body
    assert str(specs) not in body
    assert f"- `{problem}`" in body.splitlines() and "_Ledgers" not in body
    assert "- already succeeded in staging: **no**, 12 not yet:" in body.splitlines()
    assert f"  - {missing[0]}" in body.splitlines() and f"  - {missing[9]}" in body.splitlines()
    assert "  - … and 2 more (the plan task's log lists them)" in body.splitlines()
