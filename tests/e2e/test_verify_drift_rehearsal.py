"""Issue 17's acceptance as Airflow DAG runs (``dag.test()``) on real PostgreSQL with a real audit store.

One chain, because each step needs what the previous one left (a baseline comes from a verified
run, production's estimate from staging's ledger):

1. staging: a backfill that leaves nulls fails the ``s1.verify`` task, naming the expectation, in
   the task's log and in the ``verify_failed`` event; the fix verifies and records the baseline;
2. ``drift__staging`` after that run: a manual ``ALTER TABLE`` is in the report (event and the audit
   page's drift table), an allowlisted index is not;
3. production (one approval, promotion from staging): the text the ``approve`` task puts in front of
   the approver shows staging's measured durations of the pending files and the drift
   ``drift__production`` found; answered as Airflow's API answers it, the run completes.

About 60-90 s on a loaded 2-core machine (seven DAG runs, GX imported once).
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.e2e.harness import Approver, write

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

SUITE = """\
description: after the full_name backfill every user has one
technology: postgresql
object: users
expectations:
  - expect_column_values_to_not_be_null: {column: full_name}
  - expect_table_row_count_to_be_between: {min_value: 1}
"""


@pytest.fixture
def world(tmp_path, make_pg_database, monkeypatch, airflow_db):
    from polymigrate.audit import PostgresAuditStore

    specs = tmp_path / "specs"
    write(specs / "environments/staging.yaml", """\
        regions: {s1: null}
        policy: {approvals: {required: 0}, retries: 0, lock_wait_seconds: 5}
        """)
    write(specs / "environments/production.yaml", """\
        regions: {p1: null}
        policy:
          promotion_from: staging
          approvals: {required: 1, roles: [dba]}
          retries: 0
          lock_wait_seconds: 5
        """)
    write(specs / "approvers.yaml", "users:\n  ann: [dba]\n")
    write(specs / "shop/domain.yaml", """\
        technologies: {postgresql: {schema: shop}}
        drift:
          allow: ['postgresql:indexes.manual_*']
        """)
    write(specs / "shop/postgresql/V1__users.sql",
          "CREATE TABLE users (id bigint PRIMARY KEY, first_name text, last_name text, full_name text);\n"
          "INSERT INTO users SELECT g, 'f' || g, CASE WHEN g % 50 = 0 THEN NULL ELSE 'l' || g END\n"
          "  FROM generate_series(1, 200) g;\n")
    # the bug: `||` with a NULL last name is NULL, so four users keep no full name
    write(specs / "shop/postgresql/V2__backfill_full_name.sql",
          "-- polymigrate: backfill=true, batch_size=50\n"
          "UPDATE users SET full_name = first_name || ' ' || last_name WHERE full_name IS NULL;\n")
    write(specs / "shop/expectations/users_full_name.yaml", SUITE)
    audit = make_pg_database("pm_e2e17_audit")
    staging, production = make_pg_database("pm_e2e17_s1"), make_pg_database("pm_e2e17_p1")
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_AUDIT", audit)
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_STAGING_S1", staging)
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_P1", production)
    store = PostgresAuditStore(audit)
    store.ensure_schema()
    yield specs, store, staging, production
    store.close()


def run_dag(specs: Path, dag_id: str):
    from polymigrate_airflow.renderer import build_dags

    dr = build_dags(specs)[dag_id].test()
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}


def sql(url: str, text: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(text)


def test_verify_names_the_expectation_drift_reports_by_hand_changes_and_production_sees_both(world, capsys):
    specs, store, staging, production = world

    # 1. the backfill leaves nulls: verify fails naming the suite, the expectation and what it saw
    capsys.readouterr()
    dr, states = run_dag(specs, "migrate__shop__staging")
    assert dr.state == "failed" and states["s1.postgresql"] == "success" and states["s1.verify"] == "failed", states
    named = "expectation users_full_name: expect_column_values_to_not_be_null"
    log = capsys.readouterr().out  # dag.test() writes the task logs to stdout
    assert (f"AirflowFailException: verification failed in s1:\n  postgresql: {named}: FAILED "
            "(users (column=full_name): 4 of 200 row(s) unexpected") in log, log[-3000:]
    [failed] = [r.event for r in store.query(kind="verify_failed")]
    assert failed.run_id == dr.run_id and failed.region == "s1"
    assert {c["name"]: c["ok"] for c in failed.details["checks"] if c["name"].startswith("expectation")} == {
        named: False, "expectation users_full_name: expect_table_row_count_to_be_between": True}
    assert store.query(kind="snapshot") == []  # a failed verify records no baseline

    write(specs / "shop/postgresql/V3__backfill_rest.sql",
          "-- polymigrate: backfill=true\nUPDATE users SET full_name = first_name WHERE full_name IS NULL;\n")
    dr, states = run_dag(specs, "migrate__shop__staging")
    assert dr.state == "success", states
    [verified] = [r.event for r in store.query(kind="verified", run_id=dr.run_id)]
    assert all(c["ok"] for c in verified.details["checks"]) and named in {c["name"] for c in verified.details["checks"]}
    assert [r.event.environment for r in store.query(kind="snapshot")] == ["staging"]

    # 2. by hand on staging: a column (drift) and an allowlisted diagnostic index (not drift)
    sql(staging, "ALTER TABLE shop.users ADD COLUMN nickname text")
    sql(staging, "CREATE INDEX manual_last_name ON shop.users (last_name)")
    dr, states = run_dag(specs, "drift__staging")
    assert dr.state == "success", states
    [report] = [r.event for r in store.query(kind="drift", environment="staging")]
    assert [(d["object"], d["change"]) for d in report.details["differences"]] == [
        ("tables.users.columns.nickname", "added")]
    assert report.details["targets"]["s1/postgresql"]["allowlisted"] == 1
    page = audit_page(store, "staging")
    assert "tables.users.columns.nickname" in page and "manual_last_name" not in page
    assert f'<span class="badge bad">postgresql {named}</span>' in page  # the failed verify in the history

    # 3. production: a first drift baseline, then a table created there by hand
    sql(production, "CREATE SCHEMA shop")
    assert run_dag(specs, "drift__production")[0].state == "success"
    sql(production, "CREATE TABLE shop.export_tmp (id int)")
    assert run_dag(specs, "drift__production")[0].state == "success"

    approver = Approver("migrate__shop__production", "ann", "staging timings fine")
    approver.start()
    try:
        dr, states = run_dag(specs, "migrate__shop__production")
    finally:
        approver.stop.set()
    assert approver.error is None and approver.body is not None, f"the approve task was not answered: {approver.error}"
    body = approver.body
    assert approver.assigned == ["ann"]
    assert "- measured in staging (slowest successful run of the same files), per region:" in body, body
    assert "  - p1: ~" in body and "never rehearsed" not in body, body
    assert "(slowest: postgresql V" in body and "V2__backfill_full_name.sql" in body, body
    assert "**1 object(s) changed outside migrations**: `p1/postgresql tables.export_tmp added" in body, body
    assert dr.state == "success", states
    [approved] = [r.event for r in store.query(kind="approved", environment="production")
                  if r.event.details.get("by") == "ann"]
    assert approved.details["counted"] is True and approved.run_id == dr.run_id

    # the audit page: each file's runs in staging next to the estimate shown and what production took
    from polymigrate_airflow.ui.app import Filters, _trends

    [trend] = _trends(store, Filters(from_=None, to=None, domain="shop", environment="production", region=None, kind=None))
    assert (trend.rehearsal, trend.run_id, list(trend.regions)) == ("staging", dr.run_id, ["p1"])
    assert [f.script for f in trend.files] == ["V1__users.sql", "V2__backfill_full_name.sql", "V3__backfill_rest.sql"]
    assert all(len(f.runs_ms) == 1 and f.estimate_ms == f.runs_ms[0] and f.production_ms is not None for f in trend.files)
    page = audit_page(store, "production")
    assert "shop in production: estimate from staging" in page and 'data-script="V2__backfill_full_name.sql"' in page


def audit_page(store, environment: str) -> str:
    """The audit page's HTML for one environment, from the same reads the page's route makes."""
    from polymigrate.audit.report import duration_chart_svg
    from polymigrate.audit.history import summarize_runs
    from polymigrate_airflow.ui.app import Filters, _drift, _history, _matrix, _trends
    from polymigrate_airflow.ui.page import render_page

    filters = Filters(from_=None, to=None, domain="shop", environment=environment, region=None, kind=None)
    history = _history(store, filters)
    technologies, rows = _matrix(store, filters)
    return render_page(filters=filters.as_dict(), technologies=technologies, rows=rows, history=history,
                       chart=duration_chart_svg(summarize_runs(history)), limit=500, drift=_drift(store, filters),
                       trends=_trends(store, filters))
