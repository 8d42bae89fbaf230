"""Every polymigrate operator merges the DAG's default args and params no more often than the Airflow
operator it extends does (issue 24, P4: once for a BaseOperator, three times for Airflow's own
ApprovalOperator hierarchy), and still gets everything Airflow's apply_defaults gives an operator: default args, the DAG's params, the
callbacks, XComArg dependencies of its template fields."""

from __future__ import annotations

from datetime import datetime

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param
from airflow.sdk.bases import operator as airflow_operator

from polymigrate_airflow import approval, operators

BASE = {"specs_root": "/specs", "domain": "shop", "environment": "staging"}
REGION = {**BASE, "region": "eu"}
CASES = [
    (operators.ValidateOperator, BASE),
    (operators.PlanOperator, BASE),
    (operators.DriftOperator, BASE),
    (operators.PostgresMigrationOperator, {**REGION, "technology": "postgresql"}),
    (operators.RedisMigrationOperator, {**REGION, "technology": "redis", "phase": "migrate"}),
    (operators.VerifyOperator, {**REGION, "technologies": ["postgresql"]}),
    (approval.ApproveOperator, BASE),
    (approval.ApproveContractOperator, REGION),
]


def on_failure(context):  # pragma: no cover - only compared
    pass


@pytest.mark.parametrize(("cls", "arguments"), CASES, ids=[c.__name__ for c, _ in CASES])
def test_one_merge_of_defaults_and_everything_airflow_gives(cls, arguments, monkeypatch):
    merges = []
    real = airflow_operator.get_merged_defaults
    monkeypatch.setattr(airflow_operator, "get_merged_defaults", lambda *a, **kw: merges.append(1) or real(*a, **kw))
    with DAG("d", schedule=None, start_date=datetime(2024, 1, 1), params={"dry_run": Param(False, type="boolean")},
             default_args={"owner": "team-shop", "retries": 3, "on_failure_callback": on_failure}):
        before = EmptyOperator(task_id="before")
        merges.clear()
        if issubclass(cls, ApprovalOperator):
            ApprovalOperator(task_id="airflows_own", subject="s")
        else:
            EmptyOperator(task_id="airflows_own")
        airflows_own, merges[:] = len(merges), []
        task = cls(task_id="t", **arguments)
    assert len(merges) == airflows_own, f"{cls.__name__} merged the DAG's defaults {len(merges)} times"
    assert (task.owner, task.retries) == ("team-shop", 3)
    assert task.on_failure_callback == [on_failure] or task.on_failure_callback == on_failure
    for name, value in arguments.items():
        assert getattr(task, name) == value
    if isinstance(task, approval.ApproveOperator):  # Airflow's approval form keeps its task-sourced fields only
        assert list(task.params) == ["comment"] and task.params.get_param("comment").source == "task"
    else:
        assert task.params.get_param("dry_run").source == "dag"
    # the outermost level still ran: an XComArg assigned to a template field later becomes an edge
    setattr(task, task.template_fields[0], before.output)
    assert "before" in task.upstream_task_ids
