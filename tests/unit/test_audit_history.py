"""What a compliance reviewer reads: runs and the state matrix, from events shaped exactly as the
Airflow operators record them (a scheduled staging run, an overridden production run)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from polymigrate.audit.history import person, summarize_runs
from polymigrate.audit.matrix import build_matrix
from polymigrate.audit.report import render_html
from polymigrate.audit.store import AuditRecord
from polymigrate.events import AuditEvent
from tests.audit_seed import OLD_BASE, T0, overridden_production_run, scheduled_staging_run


def records(events: list[AuditEvent]) -> list[AuditRecord]:
    return [AuditRecord(i, f"{i:064x}", e) for i, e in enumerate(events, 1)]


def test_a_scheduled_run_is_triggered_by_the_schedule_not_an_enum():
    run, = summarize_runs(records(scheduled_staging_run()))
    assert run.triggered_by == "the schedule"
    assert "DagRunType" not in render_html(records(scheduled_staging_run()))


def test_one_person_has_one_name_whether_they_triggered_or_approved():
    run, = summarize_runs(records(overridden_production_run()))
    assert run.triggered_by == "admin"  # not admin@airflow beside an approver called admin
    assert run.approvers == ["ann", "cid"]


@pytest.mark.parametrize("actor, shown", [("admin@airflow", "admin"), ("DagRunType.SCHEDULED@airflow", "the schedule"),
                                          ("scheduled@airflow", "the schedule"), ("ann", "ann"),
                                          ("carol@laptop-7", "carol@laptop-7"), ("", None)])
def test_person(actor, shown):
    assert person(actor) == shown


def test_overrides_name_each_approver_once():
    run, = summarize_runs(records(overridden_production_run()))
    assert run.overridden_by == ["ann", "cid", "bob"]
    html = render_html(records(overridden_production_run()))
    assert "Overridden by</dt><dd>ann, cid, bob</dd>" in html


def test_run_links_point_at_the_airflow_serving_the_report_not_the_port_recorded(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080")
    run, = summarize_runs(records(scheduled_staging_run()))
    assert run.run_url.startswith("http://127.0.0.1:8080/dags/migrate__common__staging/runs/")
    assert OLD_BASE not in render_html(records(scheduled_staging_run()))
    monkeypatch.delenv("AIRFLOW__API__BASE_URL")  # a CLI report far from Airflow: the recorded link
    run, = summarize_runs(records(scheduled_staging_run()))
    assert run.run_url.startswith(OLD_BASE)


def test_matrix_shows_the_version_verify_reported_when_this_store_saw_no_migration_apply():
    # The migrations applied in a run this store did not record (before the store existed, or by the
    # CLI elsewhere); this rehearsal found nothing pending and verify reported the version.
    techs, rows = build_matrix(records(scheduled_staging_run(apply=False)))
    cells = {r.region: r.cells["postgresql"] for r in rows}
    assert techs == ["postgresql"]
    assert {r: (c.version, c.pending) for r, c in cells.items()} == {"western_europe": ("2.1", 0), "north_africa": ("2.1", 0)}


def test_matrix_after_a_run_that_applied():
    techs, rows = build_matrix(records(scheduled_staging_run()))
    assert {r.region: (r.cells["postgresql"].version, r.cells["postgresql"].pending) for r in rows} == \
        {"western_europe": ("2.1", 0), "north_africa": ("2.1", 0)}


def test_matrix_uses_the_version_the_plan_read_when_the_run_then_failed():
    events = scheduled_staging_run(apply=False)[:4]
    events[3].details["current"] = {"western_europe/postgresql": "2", "north_africa/postgresql": None}
    events[3].details["targets"] = {"western_europe/postgresql": 1, "north_africa/postgresql": 3}
    _, rows = build_matrix(records(events))
    assert {r.region: (r.cells["postgresql"].version, r.cells["postgresql"].pending) for r in rows} == \
        {"western_europe": ("2", 1), "north_africa": (None, 3)}


def test_a_region_s_contract_approval_is_a_note_of_the_run_not_an_approver_of_its_change_set():
    base = dict(domain="social-commerce", environment="production", run_id="manual__1", actor="dev1@airflow")
    events = [AuditEvent("approved", at=T0, details={"by": "ann", "counted": True}, **base),
              AuditEvent("approved", at=T0, details={"by": "cid", "counted": True}, **base),
              AuditEvent("approved", at=T0, region="western_europe",
                         details={"by": "bob", "counted": True, "gate": "contract"}, **base),
              AuditEvent("rejected", at=T0, region="north_africa",
                         details={"by": "ann", "gate": "contract", "reason": "old app still live"}, **base)]
    (run,) = summarize_runs(records(events))
    assert run.approvers == ["ann", "cid"] and run.rejected_by == []
    assert "contract phase in western_europe approved by bob" in run.notes
    assert "contract phase in north_africa rejected by ann: old app still live" in run.notes


def failed_plan_run(*, retried: bool = False) -> list[AuditEvent]:
    """A production run whose plan failed (issue 22.3): before this, nothing but 'approved' was on record."""
    run_id = "manual__2026-11-30T04:00:00+00:00"
    base = dict(domain="common", environment="production", run_id=run_id, dag_id="migrate__common__production",
                actor="admin@airflow")
    at = T0 + timedelta(hours=2)
    error = ("the plan cannot run:\n  western_europe/postgresql: connection 'polymigrate_postgresql_production_"
             "western_europe' is not defined")
    out = [AuditEvent("triggered", at=at, task_id="validate", details={"by": "admin", "run_type": "manual"}, **base),
           AuditEvent("approved", at=at, task_id="approve", details={"by": "ann", "counted": True}, **base),
           AuditEvent("task_failed", at=at + timedelta(seconds=5), task_id="plan", try_number=1,
                      details={"error": error, "error_type": "PermanentError", "retryable": False}, **base)]
    if retried:
        out.append(AuditEvent("task_retried", at=at + timedelta(minutes=5), task_id="plan", try_number=2,
                              details={"try_number": 2}, **base))
    return out


def test_a_run_whose_plan_failed_reads_failed_with_its_error_in_every_export():
    import json

    from polymigrate.audit.report import render_json

    recs = records(failed_plan_run())
    run, = summarize_runs(recs)
    assert run.outcome == "failed"
    assert [(f.task_id, f.resolved) for f in run.failures] == [("plan", False)]
    assert any(n.startswith("task plan failed (try 1): the plan cannot run") for n in run.notes)
    exported, = json.loads(render_json(recs))["runs"]
    assert exported["outcome"] == "failed" and "is not defined" in exported["failures"][0]["error"]
    html = render_html(recs)
    assert "recorded</span>" not in html and "No migration was applied in this run" not in html
    assert "the run failed first" in html and "polymigrate_postgresql_production_western_europe" in html


def test_a_failed_task_retried_since_no_longer_fails_the_run_but_stays_on_record():
    run, = summarize_runs(records(failed_plan_run(retried=True)))
    assert run.outcome != "failed" and run.failures[0].resolved
    assert "retried since" in render_html(records(failed_plan_run(retried=True)))


def test_an_execute_task_failing_before_any_migration_fails_its_region():
    from polymigrate.audit.matrix import build_matrix as matrix

    events = scheduled_staging_run(apply=False)[:-2]  # planned; the region's task lost its target
    events.append(AuditEvent("task_failed", domain="common", environment="staging", region="western_europe",
                             technology="postgresql", task_id="western_europe.postgresql", run_id=events[0].run_id,
                             at=T0 + timedelta(minutes=1), details={"error": "connection refused", "retryable": True}))
    run, = summarize_runs(records(events))
    assert run.outcome == "failed" and run.region_outcome("western_europe") == "failed"
    _, rows = matrix(records(events))
    assert {r.region: r.last_run_outcome for r in rows}["western_europe"] == "failed"


def test_an_automatic_approval_is_not_a_person():
    run, = summarize_runs(records(scheduled_staging_run()))
    assert run.approvers == [] and run.auto_approved == "approvals.required: 0"
    html = render_html(records(scheduled_staging_run()))
    assert "Approved by automatically" not in html.replace("</dt><dd>", " ")
    assert "the policy approved automatically (approvals.required: 0)" in html
