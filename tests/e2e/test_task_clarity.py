"""What a user reads in a task's log and the audit trail (issue 16.6), with the operators run as
Airflow runs them (``execute`` with the run's context) on real PostgreSQL: a skipped task says why,
a dry run never reads like a real run, and a scheduled run is "scheduled" on record.
"""

from __future__ import annotations

import logging

import pytest

from tests.e2e.harness import audit_store, shop_specs, task_context

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

RUN_ID = "scheduled__2026-11-30T02:00:00+00:00"
DAG = "migrate__shop__development"


@pytest.fixture
def world(tmp_path, make_pg_database, monkeypatch, airflow_db):
    from polymigrate_airflow.renderer import build_dags

    root = shop_specs(tmp_path / "specs", {"development": """\
        regions: {d1: null, d2: null}
        policy: {approvals: {required: 0}}
        """}, {f"V{n}__t{n}.sql": f"CREATE TABLE t{n} (id bigint PRIMARY KEY);\n" for n in (1, 2)})
    store = audit_store(monkeypatch, make_pg_database("pm_clarity_audit"))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_DEVELOPMENT_D1", make_pg_database("pm_clarity_d1"))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_DEVELOPMENT_D2", make_pg_database("pm_clarity_d2"))
    yield build_dags(root)[DAG], store
    store.close()


def context(task: str, params: dict, xcoms: dict | None = None) -> dict:
    from airflow.utils.types import DagRunType

    return task_context(DAG, task, RUN_ID, params, xcoms, triggered_by=None, run_type=DagRunType.SCHEDULED)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())

    def text(self) -> str:
        text, self.lines = "\n".join(self.lines), []
        return text


@pytest.fixture
def lines(monkeypatch):
    """What the polymigrate operators log, as the task log would show it (Airflow's own logger is
    structlog, configured for the e2e session at WARNING)."""
    from polymigrate_airflow.operators import PolymigrateMixin

    handler, logger = Lines(), logging.Logger("test.task", logging.INFO)
    logger.addHandler(handler)
    monkeypatch.setattr(PolymigrateMixin, "log", property(lambda self: logger), raising=False)
    return handler


def test_a_dry_run_says_would_apply_and_a_skipped_task_says_why(world, lines):
    from airflow.sdk.exceptions import AirflowSkipException

    dag, store = world
    validate = dag.get_task("validate").execute(context("validate", {"dry_run": True}))
    triggered = [r.event for r in store.query(run_id=RUN_ID, kind="triggered")]
    assert triggered[0].details["run_type"] == "scheduled"  # not "DagRunType.SCHEDULED"
    assert triggered[0].actor == "scheduled@airflow"

    xcoms = {"validate": validate, "approve": {"changeset_hash": validate["changeset_hash"]},
             "plan": {"hash": "p" * 64}}
    lines.text()
    result = dag.get_task("d1.postgresql").execute(context("d1.postgresql", {"dry_run": True}, xcoms))
    assert result["dry_run"] is True and result["applied"] == 2
    text = lines.text()
    assert "[1/2] would apply (dry run) V1__t1.sql" in text
    assert "d1/postgresql: DRY RUN, nothing applied: 2 would apply, 0 already applied; stays at version none" in text
    assert " applied, now at version" not in text

    lines.text()
    with pytest.raises(AirflowSkipException):
        dag.get_task("d2.postgresql").execute(context("d2.postgresql", {"regions": ["d1"]}, xcoms))
    assert "Skipped: d2/postgresql is not selected in this run (params regions: ['d1']" in lines.text()


def test_the_audit_page_says_why_access_is_denied(airflow_db):
    from fastapi.testclient import TestClient

    from polymigrate_airflow.ui.app import create_app

    client = TestClient(create_app())
    page = client.get("/")
    assert page.status_code == 401 and "not signed in to Airflow" in page.text and "Browse → Migration audit" in page.text
    export = client.get("/export?format=csv")
    assert export.status_code == 401 and "POST /auth/token" in export.json()["hint"]
