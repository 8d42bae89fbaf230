"""The command line enforces an environment's policy exactly as its DAG does, on real PostgreSQL, and
records every run in the audit store, where the audit page shows it.

The spec tree: staging (s1, audit required), production (p1: two approvals from dba, four-eyes,
destructive changes banned, promotion from staging, optionally a window and break glass from the
command line), testing (t1, no policy) and uat (u1: promotion from staging, nobody approves).
Each region is its own fresh database; connections are ``AIRFLOW_CONN_*`` variables.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from polymigrate.audit import PostgresAuditStore
from polymigrate.cli import app
from polymigrate.connections import env_var
from polymigrate.events import default_actor

pytestmark = pytest.mark.integration

REASON = "INC-4711 checkout is down"
V1 = "CREATE TABLE customers (id bigint PRIMARY KEY, first_name text, full_name text);\n"
V2 = "ALTER TABLE customers DROP COLUMN first_name;\n"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def production_yaml(*, emergency_cli: bool, window_open: bool | None) -> str:
    window = ""
    if window_open is not None:  # closed: a day three days away; open: every day, all day
        days = list(DAYS) if window_open else [DAYS[(datetime.now(timezone.utc).weekday() + 3) % 7]]
        window = f'  window: {{days: {days}, start: "00:00", end: "23:59", timezone: UTC}}\n'.replace("'", "")
    return textwrap.dedent(f"""\
        regions: {{p1: null}}
        policy:
          approvals: {{required: 2, roles: [dba], triggerer_may_approve: false}}
          destructive_allowed: false
          lint_block_at: critical
          promotion_from: staging
          emergency: {{cli: {str(emergency_cli).lower()}}}
        """) + window


class World:
    def __init__(self, root: Path, urls: dict[str, str], audit: str):
        self.root, self.urls, self.audit = root, urls, audit
        self.runner = CliRunner()

    def production(self, *, emergency_cli: bool = True, window_open: bool | None = None) -> None:
        (self.root / "environments" / "production.yaml").write_text(production_yaml(emergency_cli=emergency_cli,
                                                                                    window_open=window_open))

    def cli(self, *args: str):
        return self.runner.invoke(app, [*args, "-s", str(self.root)])

    def migrate(self, env: str, *extra: str):
        return self.cli("migrate", "-e", env, "-d", "shop", "-t", "postgresql", *extra)

    def ledger(self, region: str) -> list[tuple]:
        try:
            with psycopg.connect(self.urls[region]) as c:
                return c.execute("SELECT version, status, environment, plan_hash IS NOT NULL FROM polymigrate.schema_history "
                                 "WHERE version IS NOT NULL ORDER BY installed_rank").fetchall()
        except psycopg.errors.UndefinedTable:
            return []

    def events(self, environment: str | None = None):
        store = PostgresAuditStore(self.audit)
        try:
            return [r.event for r in store.query(environment=environment)]
        finally:
            store.close()


@pytest.fixture
def world(tmp_path, make_pg_database, monkeypatch, audit_url) -> World:
    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "staging.yaml").write_text("regions: {s1: null}\npolicy: {audit_required: true}\n")
    (root / "environments" / "testing.yaml").write_text("regions: {t1: null}\n")
    (root / "environments" / "uat.yaml").write_text("regions: {u1: null}\npolicy: {promotion_from: staging}\n")
    (root / "approvers.yaml").write_text("users:\n  ann: [dba]\n  bob: [dba]\n")
    (root / "shop" / "postgresql").mkdir(parents=True)
    (root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql: {}\n")
    (root / "shop" / "postgresql" / "V1__customers.sql").write_text(V1)
    urls = {}
    for env, region in (("staging", "s1"), ("production", "p1"), ("testing", "t1"), ("uat", "u1")):
        urls[region] = make_pg_database(f"pm_clipol_{region}")
        monkeypatch.setenv(env_var(f"polymigrate_postgresql_{env}_{region}"), urls[region])
    w = World(root, urls, audit_url)
    w.production()
    return w


def test_the_production_bypass_is_refused_and_on_record(world):
    (world.root / "shop" / "postgresql" / "V2__drop_first_name.sql").write_text(V2)
    world.production(window_open=False)
    out = world.migrate("production", "--skip-approval")
    assert out.exit_code == 2 and "--skip-approval is gone" in out.stderr

    out = world.migrate("production")
    assert out.exit_code == 1, out.output
    assert "refused by policy" in out.stderr and "destructive changes are not allowed in production" in out.stderr
    assert world.ledger("p1") == []  # nothing ran
    events = world.events("production")
    assert [e.kind for e in events] == ["triggered", "validated", "refused", "task_failed"]  # the run failed, on record
    assert events[0].actor == default_actor() and events[0].details["origin"] == "cli"
    assert events[0].details["verb"] == "migrate" and events[0].run_id.startswith("cli-")

    (world.root / "shop" / "postgresql" / "V2__drop_first_name.sql").unlink()
    out = world.migrate("production")
    assert out.exit_code == 1 and "production requires 2 approval(s)" in out.stderr
    assert "migrate__shop__production" in out.stderr and "--emergency-override" in out.stderr
    assert world.ledger("p1") == []


def test_break_glass_needs_the_policy_and_a_reason(world):
    world.production(emergency_cli=False)
    out = world.migrate("production", "--emergency-override", "--reason", REASON)
    assert out.exit_code == 1 and "policy.emergency.cli" in out.stderr
    out = world.migrate("production", "--emergency-override", "--reason", "urgent")
    assert out.exit_code == 2 and "needs --reason" in out.stderr
    assert world.ledger("p1") == []


def test_break_glass_still_waits_for_the_window(world):
    (world.root / "shop" / "postgresql" / "V2__drop_first_name.sql").write_text(V2)
    world.production(window_open=False)
    out = world.migrate("production", "--emergency-override", "--reason", REASON)
    assert out.exit_code == 1, out.output
    assert "execution window of production is closed" in out.stderr and "opens" in out.stderr
    assert world.ledger("p1") == []
    kinds = [e.kind for e in world.events("production")]
    assert kinds == ["triggered", "validated", "overridden", "overridden", "planned", "refused", "task_failed"]


def test_break_glass_runs_recorded_with_who_and_why_and_the_audit_page_shows_it(world):
    (world.root / "shop" / "postgresql" / "V2__drop_first_name.sql").write_text(V2)
    world.production(window_open=True)
    out = world.migrate("production", "--emergency-override", "--reason", REASON)
    assert out.exit_code == 0, out.output
    assert world.ledger("p1") == [("1", "success", "production", True), ("2", "success", "production", True)]

    events = world.events("production")
    assert [e.kind for e in events] == ["triggered", "validated", "overridden", "overridden", "planned",
                                        "migration_started", "migration_succeeded", "migration_started",
                                        "migration_succeeded", "snapshot", "verified"]
    approval, promotion = [e for e in events if e.kind == "overridden"]
    me = default_actor()
    assert approval.details["by"] == me and approval.details["reason"] == REASON and approval.details["how"] == "break_glass"
    assert any("destructive" in b for b in approval.details["bypassed"])
    assert promotion.details["gate"] == "promotion" and len(promotion.details["missing"]) == 2
    assert {e.run_id for e in events} == {events[0].run_id}

    from polymigrate.audit.history import summarize_runs

    store = PostgresAuditStore(world.audit)
    try:
        (run,) = summarize_runs(store.query(environment="production"))
    finally:
        store.close()
    assert run.outcome == "succeeded" and run.triggered_by == me and me in run.overridden_by
    assert any(REASON in n for n in run.notes)

    page = audit_page(world.audit, environment="production")
    assert "overridden" in page and REASON in page and me in page


def audit_page(url: str, **filters: str) -> str:
    """The audit page as Airflow's API server serves it (authentication is tested in tests/e2e)."""
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.core_api.security import get_user
    from polymigrate_airflow.ui.app import create_app, get_access, get_store
    from tests.audit_seed import reads_everything

    app = create_app()

    def store():
        s = PostgresAuditStore(url)
        yield s
        s.close()

    app.dependency_overrides[get_store] = store
    app.dependency_overrides[get_user] = lambda: object()
    app.dependency_overrides[get_access] = reads_everything()  # who reads what: test_audit_access.py
    response = TestClient(app, root_path="/polymigrate").get("/", params=filters)
    assert response.status_code == 200, response.text
    return response.text


def test_the_promotion_gate_holds_from_the_command_line_until_staging_ran_it(world):
    out = world.migrate("uat")
    assert out.exit_code == 1 and "have not succeeded in staging yet" in out.stderr and "V1__customers.sql" in out.stderr
    assert world.ledger("u1") == []
    assert world.migrate("staging").exit_code == 0
    out = world.migrate("uat")
    assert out.exit_code == 0, out.output
    assert world.ledger("u1") == [("1", "success", "uat", True)]


def test_an_environment_that_requires_the_audit_trail_runs_nothing_without_it(world, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_POLYMIGRATE_AUDIT")
    out = world.migrate("staging")
    assert out.exit_code == 1 and "no audit store configured" in out.stderr
    assert world.ledger("s1") == []


def test_every_cli_run_with_an_audit_store_is_recorded_like_a_dag_run(world):
    out = world.migrate("testing")
    assert out.exit_code == 0, out.output
    events = world.events("testing")
    assert [e.kind for e in events] == ["triggered", "validated", "approved", "planned", "migration_started",
                                        "migration_succeeded", "snapshot", "verified"]
    assert events[2].details["automatic"] is True
    planned = events[3].details["hash"]
    assert world.ledger("t1") == [("1", "success", "testing", True)]
    with psycopg.connect(world.urls["t1"]) as c:
        assert c.execute("SELECT DISTINCT plan_hash FROM polymigrate.schema_history").fetchall() == [(planned,)]
    page = audit_page(world.audit, environment="testing")
    assert events[0].run_id in page and "V1__customers.sql" in page


def test_an_adhoc_url_of_a_production_target_is_refused_and_the_attempt_recorded(world, tmp_path):
    files = tmp_path / "sql"
    files.mkdir()
    (files / "V1__customers.sql").write_text(V1)
    (files / "U1__customers.sql").write_text("DROP TABLE customers;\n")
    other_spelling = world.urls["p1"].replace("127.0.0.1", "localhost")
    out = world.cli("undo", "--to", "0", "--url", other_spelling, "-l", str(files))
    assert out.exit_code == 1, out.output
    assert "is the target production/p1/postgresql" in out.stderr and "-e production" in out.stderr
    refused = world.events("adhoc")
    assert [(e.kind, e.details["gate"]) for e in refused] == [("refused", "adhoc")]

    scratch = world.urls["t1"]  # testing's target: testing's policy constrains nothing, so ad hoc runs may
    out = world.cli("migrate", "--url", scratch, "-l", str(files), "-d", "scratch")
    assert out.exit_code == 0, out.output
    recorded = [e for e in world.events("adhoc") if e.domain == "scratch"]
    assert [e.kind for e in recorded] == ["triggered", "migration_started", "migration_succeeded"]
    assert recorded[0].details["adhoc"] is True and "@" in recorded[0].details["url"]


def test_an_adhoc_run_on_a_database_whose_ledger_says_production_is_refused(world, tmp_path, monkeypatch):
    world.production(window_open=True)
    assert world.migrate("production", "--emergency-override", "--reason", REASON).exit_code == 0
    monkeypatch.delenv(env_var("polymigrate_postgresql_production_p1"))  # the URL alone is not recognised now
    files = tmp_path / "sql"
    files.mkdir()
    (files / "V1__customers.sql").write_text(V1)
    (files / "U1__customers.sql").write_text("DROP TABLE customers;\n")
    out = world.cli("undo", "--to", "0", "--url", world.urls["p1"], "-l", str(files), "-d", "shop")
    assert out.exit_code == 1, out.output
    assert "its ledger records runs of 'shop' in production" in out.stderr
    assert world.ledger("p1")[0][:2] == ("1", "success")


def test_approve_status_reads_the_approvals_on_record(world):
    from polymigrate.commands import load_domain
    from polymigrate.events import AuditEvent
    from polymigrate.policy import bound_changeset_hash

    project, domain, catalog = load_domain(world.root, "shop")
    changeset = bound_changeset_hash("shop", project.environments["production"], catalog.migrations["postgresql"])
    store = PostgresAuditStore(world.audit)
    store.ensure_schema()
    run_id = "manual__2026-11-09T01:00:00+00:00"
    try:
        store.emit(AuditEvent(kind="triggered", domain="shop", environment="production", run_id=run_id,
                              actor="olga@airflow", details={"by": "olga"}))
        store.emit(AuditEvent(kind="approved", domain="shop", environment="production", run_id=run_id,
                              details={"by": "ann", "counted": True, "changeset_hash": changeset}))
        out = world.cli("approve-status", "-e", "production", "-d", "shop", "--run-id", run_id)
        assert out.exit_code == 1 and "waiting" in out.stdout and "needs 1 more approval(s)" in out.stdout
        store.emit(AuditEvent(kind="approved", domain="shop", environment="production", run_id=run_id,
                              details={"by": "bob", "counted": True, "changeset_hash": changeset},
                              at=datetime.now(timezone.utc) + timedelta(seconds=1)))
    finally:
        store.close()
    out = world.cli("approve-status", "-e", "production", "-d", "shop", "--run-id", run_id)
    assert out.exit_code == 0, out.output
    assert "approved" in out.stdout and "ann, bob" in out.stdout
