"""Issue 22.3: a run that fails is a failed run on record, whichever task failed.

Airflow DAG runs (``dag.test()``) on real PostgreSQL with a real audit store, read back through the
audit page's own app (the page, the JSON and the HTML export):

1. ``plan`` fails (a region's connection is not defined): before, nothing but ``triggered``,
   ``validated`` and ``approved`` was recorded, so the run read "recorded" with "No migration was
   applied in this run";
2. an execute task fails (a statement PostgreSQL refuses): the run is failed, the task's error is on
   record as ``task_failed`` next to the migration's own ``migration_failed``, and its fix says which
   task to clear (issue 22.6: it said "run migrate again", the command line's way).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.harness import TYPO_RELEASE, audit_store, shop_specs

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

CONN_P2 = "AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_P2"


@pytest.fixture
def world(tmp_path, make_pg_database, monkeypatch, airflow_db):
    specs = shop_specs(tmp_path / "specs", {"production": """\
        regions: {p1: null, p2: null}
        policy:
          approvals: {required: 0}
          rollout: {strategy: sequential, halt_on_failure: true}
          retries: 0
          lock_wait_seconds: 5
        """}, TYPO_RELEASE)
    audit = make_pg_database("pm_e2e22_audit")
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_P1", make_pg_database("pm_e2e22_p1"))
    monkeypatch.delenv(CONN_P2, raising=False)
    store = audit_store(monkeypatch, audit)
    yield specs, store, audit, monkeypatch, make_pg_database
    store.close()


def run_dag(specs: Path):
    from polymigrate_airflow.renderer import build_dags

    dr = build_dags(specs)["migrate__shop__production"].test()
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}


def audit_client(audit_url: str):
    """The audit page's app as the API server mounts it (the signed-in user stubbed: tested elsewhere)."""
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.core_api.security import get_user
    from polymigrate.audit import PostgresAuditStore
    from polymigrate_airflow.ui.app import create_app, get_access, get_store
    from tests.audit_seed import reads_everything

    def store():
        s = PostgresAuditStore(audit_url)
        try:
            yield s
        finally:
            s.close()

    app = create_app()
    app.dependency_overrides[get_store] = store
    app.dependency_overrides[get_user] = lambda: object()
    app.dependency_overrides[get_access] = reads_everything()  # who reads what: test_audit_access.py
    return TestClient(app, root_path="/polymigrate")


def test_a_failed_plan_and_a_failed_execute_are_failed_runs_with_their_error(world):
    specs, store, audit, monkeypatch, make_pg_database = world

    dr, states = run_dag(specs)
    assert dr.state == "failed" and states["plan"] == "failed", states
    failed, = [e for e in store.query(run_id=dr.run_id) if e.event.kind == "task_failed"]
    assert failed.event.task_id == "plan" and failed.event.details["retryable"] is False
    assert "polymigrate_postgresql_production_p2" in failed.event.details["error"]

    monkeypatch.setenv(CONN_P2, make_pg_database("pm_e2e22_p2"))
    dr2, states = run_dag(specs)
    assert dr2.state == "failed" and states["p1.postgresql"] == "failed", states
    kinds = [(e.event.kind, e.event.task_id) for e in store.query(run_id=dr2.run_id)]
    assert ("migration_failed", "p1.postgresql") in kinds and ("task_failed", "p1.postgresql") in kinds
    error = next(e.event.details["error"] for e in store.query(run_id=dr2.run_id) if e.event.kind == "task_failed")
    # issue 22.6: Airflow's advice, not the command line's
    assert "clear the task `p1.postgresql` in this run" in error and "run migrate again" not in error, error

    client = audit_client(audit)
    page = client.get("/", params={"domain": "shop"})
    assert page.status_code == 200
    for run_id, says in ((dr.run_id, "polymigrate_postgresql_production_p2"), (dr2.run_id, "orderz")):
        row = page.text.split(f'data-run="{run_id}"', 1)[1].split("</tr>", 1)[0]
        assert '<span class="badge bad">failed</span>' in row and says in row, row

    runs = {r["run_id"]: r for r in json.loads(client.get("/export", params={"format": "json"}).text)["runs"]}
    assert runs[dr.run_id]["outcome"] == "failed" and runs[dr2.run_id]["outcome"] == "failed"
    assert [f["task_id"] for f in runs[dr.run_id]["failures"]] == ["plan"]
    assert [(f["task_id"], f["region"]) for f in runs[dr2.run_id]["failures"]] == [("p1.postgresql", "p1")]
    html = client.get("/export", params={"format": "html"}).text
    assert ">recorded</span>" not in html and "No migration was applied in this run" not in html
    assert "No migration was applied: the run failed first." in html and "orderz" in html
