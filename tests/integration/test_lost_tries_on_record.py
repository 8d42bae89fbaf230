"""Every failed try is on record in the audit store, whoever failed it (issue 22): a try whose worker
was killed outright is failed by Airflow's scheduler, whose failure callback (run by the DAG
processor) records it; an ordinary failure is recorded once, by the operator; a failed or refused
command-line run is recorded as a DAG task's is. Real PostgreSQL targets and a real audit store.

The killed worker itself is tests/e2e/test_cluster.py (a Celery worker SIGKILLed mid-file).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException
from typer.testing import CliRunner

from polymigrate.audit import PostgresAuditStore
from polymigrate.audit.history import summarize_runs
from polymigrate.cli import app
from polymigrate.commands import EnvironmentConnector, RunParams, Who, open_run
from polymigrate.connections import env_var
from polymigrate_airflow import callbacks
from polymigrate_airflow.operators import MigrationOperator
from polymigrate_airflow.renderer import build_dags

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BAD = "CREATE TABLE customers (id bigint PRIMARY KEY, first_name txet);\n"


@pytest.fixture
def world(tmp_path, make_pg_database, monkeypatch, audit_url):
    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "testing.yaml").write_text("regions: {t1: null}\npolicy: {audit_required: true}\n")
    (root / "environments" / "production.yaml").write_text(
        "regions: {p1: null}\npolicy: {approvals: {required: 2}, audit_required: true}\n")
    (root / "shop" / "postgresql").mkdir(parents=True)
    (root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql: {}\n")
    (root / "shop" / "postgresql" / "V1__customers.sql").write_text(BAD)
    for env, region in (("testing", "t1"), ("production", "p1")):
        monkeypatch.setenv(env_var(f"polymigrate_postgresql_{env}_{region}"), make_pg_database(f"pm_lost_{region}"))
    return SimpleNamespace(root=root, audit=audit_url)


def events(audit: str, kind: str | None = None):
    store = PostgresAuditStore(audit)
    try:
        return list(store.query(kind=kind))
    finally:
        store.close()


def operator(root: Path) -> MigrationOperator:
    """The execute task as the DAG file defines it (the DAG processor runs callbacks on such a copy)."""
    return MigrationOperator(task_id="t1.migrate_postgresql", specs_root=str(root), domain="shop",
                             environment="testing", region="t1", technology="postgresql")


def context(task: MigrationOperator, try_number: int = 1) -> dict:
    """What a task and its callbacks get: the try as the server recorded it, the run, the params, and
    the upstream XComs (approve approved the files as they are)."""
    run = open_run(task.specs_root, "shop", "testing", params=RunParams(), who=Who("x", "x", "x"),
                   connector=EnvironmentConnector(), audit=None)
    try:
        pulled = {"plan": {"hash": "h"}, "approve": {"changeset_hash": run.changeset_hash()}}
    finally:
        run.close()
    ti = SimpleNamespace(task=task, try_number=try_number, max_tries=2, dag_id="migrate__shop__testing",
                         task_id=task.task_id, xcom_pull=lambda task_ids: pulled.get(task_ids))
    return {"ti": ti, "task": task, "run_id": "scheduled__2026-12-06", "params": {},
            "dag_run": SimpleNamespace(triggering_user_name=None, run_type="scheduled")}


def test_every_task_of_every_dag_has_the_callbacks_that_record_a_lost_try():
    dags = build_dags(ROOT / "migration_specs")
    assert dags
    for dag in dags.values():
        for task in dag.tasks:
            for attr, fn in (("on_failure_callback", callbacks.on_failure), ("on_retry_callback", callbacks.on_retry)):
                got = getattr(task, attr)
                assert fn in (got if isinstance(got, list) else [got]), (dag.dag_id, task.task_id, attr)


def test_a_try_failed_by_the_scheduler_is_recorded_by_its_callback(world):
    # the heartbeat timeout: a try left, so the DAG processor runs on_retry_callback, then the last one fails
    callbacks.on_retry(context(operator(world.root), 1))
    callbacks.on_retry(context(operator(world.root), 1))  # the executor's report of the same try: once only
    callbacks.on_failure(context(operator(world.root), 2))
    failed = [r.event for r in events(world.audit, "task_failed")]
    assert [(e.task_id, e.try_number, e.region, e.technology, e.run_id) for e in failed] == [
        ("t1.migrate_postgresql", 1, "t1", "postgresql", "scheduled__2026-12-06"),
        ("t1.migrate_postgresql", 2, "t1", "postgresql", "scheduled__2026-12-06")]
    assert [(e.details["error_type"], e.details["retryable"]) for e in failed] == [("WorkerLost", True),
                                                                                   ("WorkerLost", False)]
    assert "worker stopped before the task reported an outcome" in failed[0].details["error"]
    assert "clear the task" in failed[0].details["error"]
    (run,) = summarize_runs(events(world.audit))
    assert run.outcome == "failed"


def test_an_ordinary_failure_is_recorded_once_by_the_operator_not_again_by_its_callback(world):
    task = operator(world.root)
    ctx = context(task)
    with pytest.raises(AirflowFailException, match="txet"):
        task.execute(ctx)
    callbacks.on_failure(ctx)  # the worker runs it after the operator recorded the failure
    failed = [r.event for r in events(world.audit, "task_failed")]
    assert len(failed) == 1 and "txet" in failed[0].details["error"], [e.details for e in failed]


def test_a_failed_command_line_run_is_on_record_as_failed(world):
    out = CliRunner().invoke(app, ["migrate", "-e", "testing", "-d", "shop", "-s", str(world.root)])
    assert out.exit_code == 1 and "txet" in out.stderr
    failed = [r.event for r in events(world.audit, "task_failed")]
    assert len(failed) == 1 and "txet" in failed[0].details["error"] and failed[0].run_id.startswith("cli")
    (run,) = summarize_runs(events(world.audit))
    assert run.outcome == "failed"


def test_a_refused_command_line_run_is_on_record_with_its_refusal(world):
    (world.root / "shop" / "postgresql" / "V1__customers.sql").write_text(BAD.replace("txet", "text"))
    out = CliRunner().invoke(app, ["migrate", "-e", "production", "-d", "shop", "-s", str(world.root)])
    assert out.exit_code == 1 and "refused by policy" in out.stderr
    kinds = [r.event.kind for r in events(world.audit)]
    assert kinds[-2:] == ["refused", "task_failed"], kinds
    (run,) = summarize_runs(events(world.audit))
    assert run.outcome == "refused by policy"


def test_specs_that_do_not_load_still_leave_the_failed_command_line_run_on_record(world):
    (world.root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql: {schema: [not, a, name]}\n")
    out = CliRunner().invoke(app, ["migrate", "-e", "testing", "-d", "shop", "-s", str(world.root)])
    assert out.exit_code == 1
    failed = [r.event for r in events(world.audit, "task_failed")]
    assert len(failed) == 1 and "domain.yaml" in failed[0].details["error"], [e.details for e in failed]
