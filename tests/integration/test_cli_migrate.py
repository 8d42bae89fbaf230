"""The migrate/undo/baseline/repair/status verbs, ad hoc (--url) and from specs, on the real server."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from polymigrate.cli import app
from polymigrate.connections import env_var

pytestmark = pytest.mark.integration


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def q(url: str, sql: str):
    with psycopg.connect(url) as c:
        return c.execute(sql).fetchall()


@pytest.fixture
def folder(tmp_path) -> Path:
    return write(tmp_path / "sql", {
        "V1__orders.sql": "CREATE TABLE orders (id int, owner text DEFAULT ${owner});\n",
        "V2__index.sql": "CREATE INDEX CONCURRENTLY orders_id ON orders (id);\n",
        "U2__index.sql": "DROP INDEX CONCURRENTLY orders_id;\n",
        "R__view.sql": "CREATE OR REPLACE VIEW v AS SELECT id FROM orders;\n",
    })


def test_adhoc_migrate_like_flyway_then_nothing_left(runner, pg_url, folder):
    args = ["migrate", "--url", pg_url, "--locations", str(folder), "--placeholder", "owner='ops'"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "3 applied, now at 2" in first.output and "3/3" in first.output
    assert q(pg_url, "SELECT column_default FROM information_schema.columns WHERE table_name = 'orders' "
                     "AND column_name = 'owner'") == \
        [("'ops'::text",)]
    again = runner.invoke(app, ["apply", *args[1:]])
    assert again.exit_code == 0 and "0 applied, now at 2" in again.output


def test_dry_run_changes_nothing(runner, pg_url, folder):
    out = runner.invoke(app, ["migrate", "--dry-run", "--url", pg_url, "-l", str(folder), "-p", "owner='x'"])
    assert out.exit_code == 0, out.output
    assert "would apply" in out.output
    assert q(pg_url, "SELECT count(*) FROM polymigrate.schema_history") == [(0,)]
    assert q(pg_url, "SELECT to_regclass('orders')") == [(None,)]


def test_a_failing_file_exits_1_naming_file_line_and_statement(runner, pg_url, tmp_path):
    folder = write(tmp_path / "bad", {"V1__ok.sql": "CREATE TABLE a (id int);\n",
                                      "V2__bad.sql": "-- adds a column\nALTER TABLE missing ADD COLUMN x int;\n"})
    out = runner.invoke(app, ["migrate", "--url", pg_url, "-l", str(folder)])
    assert out.exit_code == 1
    assert "V2__bad.sql:2" in out.stderr and "ALTER TABLE missing ADD COLUMN x int" in out.stderr
    assert "42P01" in out.stderr


def test_a_missing_placeholder_exits_1_naming_the_line(runner, pg_url, folder):
    out = runner.invoke(app, ["migrate", "--url", pg_url, "-l", str(folder)])
    assert out.exit_code == 1
    assert "V1__orders.sql:1" in out.stderr and "${owner}" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["migrate", "--url", "postgresql://x/y"], "--locations"),
    (["migrate"], "-e ENV -d DOMAIN"),
    (["migrate", "--url", "postgresql://x/y", "-l", ".", "-e", "testing"], "not both"),
    (["migrate", "--url", "mysql://x/y", "-l", "."], "unsupported URL scheme"),
    (["migrate", "--url", "postgresql://x/y", "-l", ".", "-p", "novalue"], "key=value"),
    (["baseline", "--url", "postgresql://x/y"], "exactly one of"),
    (["migrate", "--url", "postgresql://x/y", "-l", ".", "--emergency-override", "--reason", "INC-1 it is down"],
     "use it with -e ENV"),
])
def test_usage_errors_exit_2(runner, args, message):
    out = runner.invoke(app, args)
    assert out.exit_code == 2, out.output
    assert message in out.stderr


def test_undo_baseline_repair_and_status(runner, pg_url, folder, tmp_path):
    common = ["--url", pg_url, "-l", str(folder), "-p", "owner='ops'"]
    assert runner.invoke(app, ["migrate", *common]).exit_code == 0
    undone = runner.invoke(app, ["undo", "--to", "1", *common])
    assert undone.exit_code == 0, undone.output
    assert "1 undone, now at 1" in undone.output
    assert q(pg_url, "SELECT to_regclass('orders_id')") == [(None,)]

    status = runner.invoke(app, ["status", "--url", pg_url, "-l", str(folder)])
    assert status.exit_code == 0 and "undone" in status.output

    (folder / "V1__orders.sql").write_text("CREATE TABLE orders (id int, owner text DEFAULT ${owner}); -- tidy\n")
    blocked = runner.invoke(app, ["migrate", *common])
    assert blocked.exit_code == 1 and "repair" in blocked.stderr
    repaired = runner.invoke(app, ["repair", "--url", pg_url, "-l", str(folder)])
    assert repaired.exit_code == 0 and "realigned V1__orders.sql" in repaired.output
    assert runner.invoke(app, ["migrate", *common]).exit_code == 0
    assert q(pg_url, "SELECT to_regclass('orders_id') IS NOT NULL") == [(True,)]

    other = write(tmp_path / "legacy", {"V1__old.sql": "CREATE TABLE legacy (id int);\n",
                                        "V2__new.sql": "CREATE TABLE fresh (id int);\n"})
    base = runner.invoke(app, ["baseline", "--version", "1", "--url", pg_url, "-d", "legacy"])
    assert base.exit_code == 0, base.output
    run = runner.invoke(app, ["migrate", "--url", pg_url, "-l", str(other), "-d", "legacy"])
    assert run.exit_code == 0 and "1 applied" in run.output
    assert q(pg_url, "SELECT to_regclass('legacy'), to_regclass('fresh') IS NOT NULL") == [(None, True)]


@pytest.fixture
def specs(tmp_path) -> Path:
    root = tmp_path / "specs"
    write(root / "environments", {
        "testing.yaml": "description: t\nregions:\n  r1: {}\n  r2: {}\npolicy:\n  approvals: {required: 0}\n"
                        "  lock_timeout: 3s\nplaceholders:\n  owner: \"'env'\"\n",
        "production.yaml": "description: p\nregions:\n  r1: {}\npolicy:\n  approvals: {required: 2}\n",
    })
    write(root / "shop", {"domain.yaml": "description: shop\ntechnologies:\n  postgresql:\n    schema: shop\n"})
    write(root / "shop" / "postgresql", {"V1__orders.sql": "CREATE TABLE orders (owner text DEFAULT ${owner});\n"})
    return root


def test_spec_mode_uses_airflow_connection_env_vars_per_region(runner, specs, make_pg_database, monkeypatch):
    r1, r2 = make_pg_database(), make_pg_database()
    monkeypatch.setenv(env_var("polymigrate_postgresql_testing_r1"), r1)
    monkeypatch.setenv(env_var("polymigrate_postgresql_testing_r2"), r2)
    out = runner.invoke(app, ["migrate", "-e", "testing", "-d", "shop", "-s", str(specs), "-r", "r2"])
    assert out.exit_code == 0, out.output
    assert "r2/postgresql" in out.output
    assert q(r2, "SELECT environment, region, domain FROM polymigrate.schema_history") == [("testing", "r2", "shop")]
    assert q(r2, "SELECT column_default FROM information_schema.columns WHERE table_schema = 'shop'") == \
        [("'env'::text",)]
    assert q(r1, "SELECT to_regclass('polymigrate.schema_history')") == [(None,)]  # r1 was not selected


def test_spec_mode_refuses_an_environment_that_needs_approvals(runner, specs, audit_url):
    out = runner.invoke(app, ["migrate", "-e", "production", "-d", "shop", "-s", str(specs)])
    assert out.exit_code == 1
    assert "refused by policy" in out.stderr and "requires 2 approval(s)" in out.stderr
    assert "migrate__shop__production" in out.stderr  # the DAG that collects them
    assert "--emergency-override" not in out.stderr  # this policy does not allow breaking the glass


def test_spec_mode_without_a_connection_names_the_variable(runner, specs, monkeypatch):
    monkeypatch.delenv(env_var("polymigrate_postgresql_testing_r1"), raising=False)
    out = runner.invoke(app, ["migrate", "-e", "testing", "-d", "shop", "-s", str(specs), "-r", "r1"])
    assert out.exit_code == 1
    assert "AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_TESTING_R1" in out.stderr


def test_an_adhoc_run_is_recorded_with_its_failure_and_never_its_password(runner, make_pg_database, tmp_path,
                                                                          monkeypatch):
    """With an audit store configured, an ad hoc run is on record as a spec run is: what it applied, the
    file that failed, and the run's failure (task_failed, as compliance reads outcomes), under
    environment ``adhoc``, with the URL's password stripped from every event."""
    from polymigrate.audit import PostgresAuditStore

    audit = make_pg_database("pm_adhoc_audit")
    monkeypatch.setenv(env_var("polymigrate_audit"), audit)
    secret = "s3cret-adhoc-pw"
    url = make_pg_database().replace("postgres@", f"postgres:{secret}@", 1)  # the server trusts; the URL carries one
    assert secret in url
    folder = write(tmp_path / "bad", {"V1__ok.sql": "CREATE TABLE a (id int);\n",
                                      "V2__bad.sql": "ALTER TABLE missing ADD COLUMN x int;\n"})
    out = runner.invoke(app, ["migrate", "--url", url, "-l", str(folder), "-d", "scratch"])
    assert out.exit_code == 1, out.output
    with PostgresAuditStore(audit) as store:
        events = [r.event for r in store.query(environment="adhoc")]
        assert "chain intact" in str(store.verify())
    assert [(e.kind, e.script) for e in events] == [
        ("triggered", None), ("migration_started", "V1__ok.sql"), ("migration_succeeded", "V1__ok.sql"),
        ("migration_started", "V2__bad.sql"), ("migration_failed", "V2__bad.sql"), ("task_failed", None)]
    failed = events[-1]
    assert failed.domain == "scratch" and failed.technology == "postgresql"
    assert 'relation "missing" does not exist' in failed.details["error"] and failed.details["adhoc"] is True
    assert events[0].details["url"] == url.replace(secret, "***")
    with psycopg.connect(audit) as c:
        assert c.execute("SELECT count(*) FROM polymigrate_audit.events WHERE body LIKE %s",
                         (f"%{secret}%",)).fetchone() == (0,)
