"""The emergency override's audit trail names the approvers on record, never what an XCom claims.

The plan task runs as Airflow runs it (``execute`` with the run's context) on real PostgreSQL:
production (p1) with a promotion gate from staging (s1, never rehearsed), approvals recorded in
the audit store by ann, bob and carl, and an ``approve`` XCom that someone with access to task
state rewrote to name only ``mallory``. The ``overridden`` event must name ann, bob and carl.
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import audit_store, shop_specs, task_context, write

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

RUN_ID = "manual__2026-11-09T00:50:00+00:00"
REASON = "INC-4711 checkout is down, fix needs the new column"


@pytest.fixture
def world(tmp_path, make_pg_database, monkeypatch, airflow_db):
    root = shop_specs(tmp_path / "specs", {"staging": "regions:\n  s1: null\n", "production": """\
        regions:
          p1: null
        policy:
          approvals: {required: 2, roles: [dba], triggerer_may_approve: false}
          promotion_from: staging
          lint_block_at: critical
        """}, {"V1__customers.sql": "CREATE TABLE customers (id bigint PRIMARY KEY);\n"})
    write(root / "approvers.yaml", "users:\n  ann: [dba]\n  bob: [dba]\n  carl: [dba]\n  mallory: [developer]\n")
    store = audit_store(monkeypatch, make_pg_database("pm_override_audit"))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_P1", make_pg_database("pm_override_p1"))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_STAGING_S1", make_pg_database("pm_override_s1"))
    yield root, store
    store.close()


def test_the_overridden_event_names_the_recorded_approvers_not_the_xcom(world):
    from polymigrate.commands import load_domain
    from polymigrate.events import AuditEvent
    from polymigrate.policy import bound_changeset_hash
    from polymigrate_airflow.renderer import build_dags

    root, store = world
    project, domain, catalog = load_domain(root, "shop")
    changeset = bound_changeset_hash("shop", project.environments["production"], catalog.migrations["postgresql"])
    for who in ("ann", "bob", "carl"):  # what the approve task records as each person answers
        store.emit(AuditEvent(kind="approved", domain="shop", environment="production", actor="olga@airflow",
                              run_id=RUN_ID, task_id="approve",
                              details={"by": who, "counted": True, "changeset_hash": changeset, "override": True}))

    plan = build_dags(root)["migrate__shop__production"].get_task("plan")
    xcoms = {"validate": {"changeset_hash": changeset, "risk": "low", "destructive": False,
                          "lint": {"findings": 0, "blocking": 0}},
             "approve": {"approved": True, "changeset_hash": changeset, "approved_by": ["mallory"], "override": True}}
    context = task_context("migrate__shop__production", "plan", RUN_ID,
                           {"emergency_override": True, "emergency_reason": REASON}, xcoms,
                           triggered_by="olga", run_type="manual")
    summary = plan.execute(context)
    assert summary["pending"] == 1  # the override let the unrehearsed file through the promotion gate

    overridden = [r.event for r in store.query(run_id=RUN_ID, kind="overridden")]
    assert len(overridden) == 1
    assert overridden[0].details["gate"] == "promotion" and overridden[0].details["reason"] == REASON
    assert overridden[0].details["by"] == "ann, bob, carl"
    assert "mallory" not in str(overridden[0].details)
