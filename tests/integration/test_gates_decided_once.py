"""The gates are decided once (``commands.gates.before_target``, issue 25 item 2): the DAG's execute
and plan tasks and the command line refuse the same cases with the same message, and wait for the
same moment, on real PostgreSQL targets and a real audit store.

The operators run in this process with the context a task gets (XComs of validate, approve and
plan); connections are ``AIRFLOW_CONN_*`` variables, which both the hooks and the CLI read.
"""

from __future__ import annotations

import json
import re
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred
from typer.testing import CliRunner

from polymigrate.audit import PostgresAuditStore
from polymigrate.cli import app
from polymigrate.commands import EnvironmentConnector, RunParams, Who, open_run
from polymigrate.connections import env_var
from polymigrate_airflow.operators import MigrationOperator, PlanOperator

pytestmark = pytest.mark.integration

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
V1 = "-- polymigrate: phase=expand\nCREATE TABLE customers (id bigint PRIMARY KEY, first_name text);\n"
V2 = ("-- polymigrate: phase=contract\n"
      "-- polymigrate:lint-ignore ban-drop-column reason: every reader moved off first_name\n"
      "ALTER TABLE customers DROP COLUMN first_name;\n")


def closed_window() -> str:
    """Open all day three days from now only: closed now, opening at a known moment."""
    day = DAYS[(datetime.now(timezone.utc).weekday() + 3) % 7]
    return f'window: {{days: [{day}], start: "00:00", end: "23:59", timezone: UTC}}\n'


class Gates:
    def __init__(self, root: Path, urls: dict[str, str]):
        self.root, self.urls = root, urls

    def production(self, policy: str) -> None:
        (self.root / "environments" / "production.yaml").write_text(
            "regions: {p1: null}\npolicy:\n  approvals: {required: 0}\n" + textwrap.indent(policy, "  "))

    def cli(self, env: str = "production"):
        return CliRunner().invoke(app, ["migrate", "-e", env, "-d", "shop", "-s", str(self.root)])

    def context(self, run_id: str = "manual__gates", **xcoms) -> dict:
        """A task's context as Airflow gives it: the run, the TI with its upstream XComs, the params."""
        run = open_run(self.root, "shop", "production", params=RunParams(), who=Who("ann@airflow", "ann", run_id),
                       connector=EnvironmentConnector(), audit=None)
        try:
            summary = {"changeset_hash": run.changeset_hash()}  # what validate pushed and approve approved
        finally:
            run.close()
        pulled = {"validate": summary, "approve": {"changeset_hash": summary["changeset_hash"]}, "plan": {"hash": "h"},
                  **xcoms}
        ti = SimpleNamespace(try_number=1, max_tries=1, dag_id="migrate__shop__production", task_id="t",
                             xcom_pull=lambda task_ids: pulled.get(task_ids))
        return {"params": {}, "ti": ti, "run_id": run_id,
                "dag_run": SimpleNamespace(triggering_user_name="ann", run_type="manual")}

    def execute(self, phase: str | None = None, **xcoms):
        op = MigrationOperator(task_id=f"p1.postgresql{'.' + phase if phase else ''}", specs_root=str(self.root),
                               domain="shop", environment="production", region="p1", technology="postgresql",
                               phase=phase)
        return op.execute(self.context(**xcoms))

    def plan(self):
        op = PlanOperator(task_id="plan", specs_root=str(self.root), domain="shop", environment="production")
        return op.execute(self.context())

    def refused_gates(self) -> list[str]:
        store = PostgresAuditStore(self.urls["audit"])
        try:
            return [r.event.details.get("gate") for r in store.query(environment="production", kind="refused")]
        finally:
            store.close()


@pytest.fixture
def gates(tmp_path, make_pg_database, monkeypatch, audit_url) -> Gates:
    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "staging.yaml").write_text("regions: {s1: null}\n")
    (root / "shop" / "postgresql").mkdir(parents=True)
    (root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql: {phases: [expand, contract]}\n")
    (root / "shop" / "postgresql" / "V1__customers.sql").write_text(V1)
    urls = {"audit": audit_url}
    for env, region in (("staging", "s1"), ("production", "p1")):
        urls[region] = make_pg_database(f"pm_gates_{region}")
        monkeypatch.setenv(env_var(f"polymigrate_postgresql_{env}_{region}"), urls[region])
    return Gates(root, urls)


def refusal(out) -> str:
    """The message the CLI printed under its 'refused by policy' line."""
    assert out.exit_code == 1, out.output
    head, _, message = out.stderr.partition("refused by policy\n")
    assert message, out.stderr
    return message.strip()


def test_a_closed_window_the_dag_waits_for_the_command_line_refuses_naming_the_same_moment(gates):
    gates.production(closed_window())
    message = refusal(gates.cli())
    opens = re.search(r"it opens (\S+)\n", message).group(1)
    assert message.startswith("p1/postgresql: the execution window of production is closed or too short")
    with pytest.raises(TaskDeferred) as deferred:
        gates.execute()
    assert deferred.value.trigger.moment == datetime.fromisoformat(opens)
    assert gates.refused_gates() == ["window"]  # only the CLI refused; the DAG waits


def test_an_estimate_longer_than_the_window_is_refused_by_both_with_the_same_message(gates):
    assert gates.cli("staging").exit_code == 0  # the rehearsal; then say it took two hours there
    with psycopg.connect(gates.urls["s1"]) as c:
        c.execute("UPDATE polymigrate.schema_history SET execution_time = 7200000 WHERE version = '1'")
    gates.production('rehearsal_from: staging\nwindow: {start: "01:00", end: "01:30", timezone: UTC}\n')
    message = refusal(gates.cli())
    assert "estimated 7200s is longer than the whole window" in message
    with pytest.raises(AirflowFailException) as refused:
        gates.execute()
    assert str(refused.value) == message


def test_the_promotion_gate_refuses_the_plan_task_and_the_command_line_alike(gates):
    gates.production("promotion_from: staging\n")
    message = refusal(gates.cli())
    assert "1 migration(s) have not succeeded in staging yet" in message
    with pytest.raises(AirflowFailException) as refused:
        gates.plan()
    assert str(refused.value) == message


def test_the_contract_soak_ends_at_the_same_moment_for_the_dag_and_the_command_line(gates):
    (gates.root / "shop" / "postgresql" / "V2__drop_first_name.sql").write_text(V2)
    gates.production("contract_soak_minutes: 30\n")
    message = refusal(gates.cli())  # expand applied and verified (on record), then the soak
    until = re.search(r"until (\S+)", message).group(1)
    assert message.startswith("p1: expand and migrate are applied and verified; the contract phase waits 30 min")
    # the contract task of a DAG run finds the same verify on record: the same end of the soak
    with pytest.raises(TaskDeferred) as deferred:
        gates.execute("contract", **{"p1.verify_before_contract": {"verified_at": datetime.now(timezone.utc).isoformat()}})
    assert deferred.value.trigger.moment == datetime.fromisoformat(until)


def test_refusals_come_before_waits_a_contract_without_its_approval_is_refused_while_the_window_is_closed(gates):
    (gates.root / "shop" / "postgresql" / "V2__drop_first_name.sql").write_text(V2)
    gates.production("contract_approval: true\n" + closed_window())
    with pytest.raises(AirflowFailException, match="p1: no valid approval of the contract phase on record"):
        gates.execute("contract", **{"p1.verify_before_contract": {"verified_at": datetime.now(timezone.utc).isoformat()}})
    assert gates.refused_gates() == ["contract"]
    # the expand task of the same run is not refused by it: it waits for the window
    with pytest.raises(TaskDeferred):
        gates.execute("expand")


def plan_json(gates: Gates, env: str):
    out = CliRunner().invoke(app, ["plan", "-e", env, "-s", str(gates.root), "--json"])
    return out.exit_code, {p["domain"]: p["refused"] for p in json.loads(out.stdout)["plans"]}


def test_the_command_line_s_plan_says_what_the_dag_s_plan_task_would_refuse(gates):
    gates.production("promotion_from: staging\n")
    (gates.root / "billing" / "postgresql").mkdir(parents=True)
    (gates.root / "billing" / "domain.yaml").write_text("technologies:\n  postgresql: {}\ndepends_on: [shop]\n")
    (gates.root / "billing" / "postgresql" / "V1__invoices.sql").write_text("CREATE TABLE invoices (id bigint);\n")
    code, refused = plan_json(gates, "production")
    assert code == 1
    assert len(refused["shop"]) == 1 and "1 migration(s) have not succeeded in staging yet" in refused["shop"][0]
    assert "'billing' depends on 'shop', which has pending migrations on the same targets" in refused["billing"][0]
    # the plan task refuses in the same words
    with pytest.raises(AirflowFailException) as plan_task:
        gates.plan()
    assert refused["shop"][0].splitlines()[0] in str(plan_task.value)
    assert CliRunner().invoke(app, ["migrate", "-e", "staging", "-d", "shop", "-s", str(gates.root)]).exit_code == 0
    assert CliRunner().invoke(app, ["migrate", "-e", "staging", "-d", "billing", "-s", str(gates.root)]).exit_code == 0
    code, refused = plan_json(gates, "staging")
    assert code == 0 and refused == {"shop": [], "billing": []}
