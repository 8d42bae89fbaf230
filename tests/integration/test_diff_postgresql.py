"""``polymigrate diff``, ``undo-gen`` and ``diff --from-drift`` on the real PostgreSQL server (issue 26)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from polymigrate.cli import app
from tests.conftest import PG_ADMIN_URL

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

V1 = "CREATE TABLE customer (id bigint PRIMARY KEY, name varchar(50), legacy text);\n" \
     "CREATE TABLE counter (id int PRIMARY KEY, n smallint);\n"
DESIRED = """\
CREATE TABLE customer (id bigint PRIMARY KEY, name varchar(50) NOT NULL, email text);
CREATE TABLE counter (id int PRIMARY KEY, n integer);
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customer (id),
                     total numeric(12, 2) CHECK (total >= 0));
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX customer_email ON customer (email);
"""


@pytest.fixture
def runner(monkeypatch) -> CliRunner:
    monkeypatch.setenv("POLYMIGRATE_SCRATCH_PG", PG_ADMIN_URL)
    return CliRunner()


@pytest.fixture
def domain(tmp_path) -> tuple[Path, Path]:
    mig, schema = tmp_path / "postgresql", tmp_path / "schema"
    mig.mkdir()
    schema.mkdir()
    (mig / "V1__init.sql").write_text(V1)
    (schema / "tables.sql").write_text(DESIRED)
    return mig, schema


def catalog(url: str) -> dict:
    from polymigrate.schemadiff.postgresql import catalog as read

    return read(url)


def test_diff_writes_expand_concurrently_and_contract_files_that_reach_the_declared_schema(runner, domain, make_pg_database):
    from polymigrate.schemadiff.postgresql import apply_ddl_folder, apply_migrations, diff_statements

    mig, schema = domain
    res = runner.invoke(app, ["diff", "--current", str(mig), "--desired", str(schema), "--write", str(mig),
                              "--description", "add orders"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in mig.iterdir())
    assert names == ["U2.1__add_orders_concurrently.sql", "V1__init.sql", "V2.1__add_orders_concurrently.sql",
                     "V2.2__add_orders_contract.sql", "V2__add_orders.sql"]
    main, late, contract = ((mig / n).read_text() for n in ("V2__add_orders.sql", "V2.1__add_orders_concurrently.sql",
                                                            "V2.2__add_orders_contract.sql"))
    assert main.startswith("-- polymigrate: phase=expand, lock_timeout=5s")
    assert late.startswith("-- polymigrate: transactional=false, phase=expand")
    assert contract.startswith("-- polymigrate: phase=contract")
    # the index on a table that exists is built CONCURRENTLY; the new table's index is not
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS customer_email" in late
    assert "CREATE INDEX orders_customer" in main and "CONCURRENTLY" not in main
    # constraints are added NOT VALID in the transaction, validated after it
    assert 'add constraint "orders_total_check" CHECK ((total >= (0)::numeric)) not valid' in main
    assert 'validate constraint "orders_total_check"' in late and "validate" not in main
    assert 'drop column "legacy"' in contract and "drop" not in main
    # hazards come out of the project's lint, with their rule names; the rewrite is said too
    err = res.stderr if hasattr(res, "stderr") else res.output
    assert "[high] changing-column-type: public.counter.n TYPE int4 rewrites the table" in err
    assert "V2.2__add_orders_contract.sql:4: [high] ban-drop-column" in err
    assert "smallint → integer rewrites the table" in err
    # the undo of the drop and of the type change are refused naming the statement
    assert 'column public.customer.legacy is dropped, with its values, by `alter table "public"."customer" drop column "legacy"`' in err
    assert "public.counter.n is widened from smallint to integer" in err

    # the project's adapter runs the written files; the database is then the declared one
    current, desired = make_pg_database("pm_diff_cur"), make_pg_database("pm_diff_des")
    assert apply_migrations(current, mig) == 4
    apply_ddl_folder(desired, schema)
    assert catalog(current) == catalog(desired)
    assert diff_statements(current, desired) == []

    again = runner.invoke(app, ["diff", "--current", current, "--desired", str(schema)])
    assert again.exit_code == 0 and "no difference: nothing to generate" in again.output


def test_diff_prints_without_write_and_a_bad_desired_folder_names_the_file(runner, domain, tmp_path):
    mig, schema = domain
    res = runner.invoke(app, ["diff", "--current", str(mig), "--desired", str(schema), "--no-undo"])
    assert res.exit_code == 0, res.output
    assert "-- ===== V2__generated.sql" in res.output and sorted(p.name for p in mig.iterdir()) == ["V1__init.sql"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "t.sql").write_text("CREATE TABLE t (id int PRIMARY KEY, x nosuchtype);\n")
    res = runner.invoke(app, ["diff", "--current", str(mig), "--desired", str(bad)])
    assert res.exit_code == 1
    assert f"{bad / 't.sql'}: type \"nosuchtype\" does not exist" in res.output


def test_diff_of_a_technology_without_a_generator_says_not_supported(runner, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "polymigrate.schemadiff.redis", None)  # as if the module were absent
    res = runner.invoke(app, ["diff", "--current", "redis://127.0.0.1:1/0", "--desired", "x"])
    assert res.exit_code == 1 and "redis is not supported yet" in res.output


def test_undo_gen_writes_the_u_file_that_reverses_an_additive_change(runner, tmp_path, make_pg_database):
    from polymigrate.schemadiff.postgresql import apply_migrations, apply_sql

    mig = tmp_path / "postgresql"
    mig.mkdir()
    (mig / "V1__init.sql").write_text(V1)
    (mig / "V2__email.sql").write_text("ALTER TABLE customer ADD COLUMN email text;\n"
                                       "CREATE INDEX customer_email ON customer (email);\n")
    res = runner.invoke(app, ["undo-gen", str(mig / "V2__email.sql")])
    assert res.exit_code == 0, res.output
    undo = (mig / "U2__email.sql").read_text()
    assert 'drop column "email"' in undo and "customer_email" in undo

    url = make_pg_database("pm_undo_gen")
    apply_migrations(url, mig, upto=1)
    before = catalog(url)
    apply_migrations(url, mig)
    apply_sql(url, undo)
    assert catalog(url) == before


def test_undo_gen_refuses_where_going_back_loses_data_naming_the_statement(runner, tmp_path):
    mig = tmp_path / "postgresql"
    mig.mkdir()
    (mig / "V1__init.sql").write_text(V1)
    (mig / "V2__cleanup.sql").write_text("ALTER TABLE customer ADD COLUMN email text;\n"
                                         "ALTER TABLE customer DROP COLUMN legacy;\n")
    (mig / "V3__narrow.sql").write_text("ALTER TABLE customer ALTER COLUMN name TYPE varchar(20);\n")
    res = runner.invoke(app, ["undo-gen", str(mig / "V2__cleanup.sql")])
    assert res.exit_code == 1
    assert "V2__cleanup.sql: no undo generated: column public.customer.legacy is dropped, with its values, by " \
           "`ALTER TABLE customer DROP COLUMN legacy`" in " ".join(res.output.split())
    res = runner.invoke(app, ["undo-gen", str(mig / "V3__narrow.sql")])
    assert res.exit_code == 1
    assert "narrowed from character varying(50) to character varying(20) by " \
           "`ALTER TABLE customer ALTER COLUMN name TYPE varchar(20)`" in " ".join(res.output.split())
    assert sorted(p.name for p in mig.iterdir()) == ["V1__init.sql", "V2__cleanup.sql", "V3__narrow.sql"]


def test_a_hand_change_found_by_drift_becomes_the_next_versioned_file(runner, tmp_path, make_pg_database, monkeypatch):
    from polymigrate.commands import EnvironmentConnector, RunParams, Who, open_run
    from polymigrate.commands.drift import drift_domain
    from polymigrate.commands.verbs import migrate_target, verify_region
    from polymigrate.connections import AUDIT_CONN_ID, env_var

    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "shop" / "postgresql").mkdir(parents=True)
    (root / "environments" / "staging.yaml").write_text("regions:\n  r1: null\n")
    (root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql:\n    schema: shop\n")
    (root / "shop" / "postgresql" / "V1__orders.sql").write_text(
        "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL DEFAULT 0);\n")
    target, audit = make_pg_database("pm_drift_t"), make_pg_database("pm_drift_audit")
    monkeypatch.setenv(env_var("polymigrate_postgresql_staging_r1"), target)
    monkeypatch.setenv(env_var(AUDIT_CONN_ID), audit)

    def run():
        return open_run(root, "shop", "staging", params=RunParams(), who=Who.cli(), connector=EnvironmentConnector(),
                        audit=lambda: audit)

    def migrate_verify_drift() -> int:
        r = run()
        try:
            migrate_target(r, "r1", "postgresql", plan_hash=None)
            verify_region(r, "r1", ["postgresql"])
            return drift_domain(r)["count"]
        finally:
            r.close()

    assert migrate_verify_drift() == 0
    with psycopg.connect(target, autocommit=True) as c:  # the hand change
        c.execute("ALTER TABLE shop.orders ADD COLUMN note text")
        c.execute("CREATE INDEX orders_note ON shop.orders (note)")
    r = run()
    try:
        assert drift_domain(r)["count"] == 2
    finally:
        r.close()

    folder = root / "shop" / "postgresql"
    res = runner.invoke(app, ["diff", "--from-drift", "staging/r1", "-d", "shop", "--specs", str(root),
                              "--write", str(folder)])
    assert res.exit_code == 0, res.output
    captured = {p.name for p in folder.iterdir()} - {"V1__orders.sql"}
    assert {"V2__capture_drift_staging_r1.sql", "U2__capture_drift_staging_r1.sql"} <= captured
    text = (folder / "V2__capture_drift_staging_r1.sql").read_text()
    assert text.startswith("-- polymigrate:") and "-- drift r1/postgresql tables.orders.columns.note added" in text
    assert 'add column if not exists "note" text' in text
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_note" in (
        folder / "V2.1__capture_drift_staging_r1_concurrently.sql").read_text()
    # the captured files run on the drifted target as a no-op; the next drift report is clean
    assert migrate_verify_drift() == 0
    with psycopg.connect(target) as c:
        rows = c.execute("SELECT version, success FROM polymigrate.schema_history ORDER BY installed_rank").fetchall()
    assert [v for v, ok in rows if ok] == ["1", "2", "2.1"]


def test_a_domains_declared_postgresql_schema_folder_is_its_desired_state_and_not_a_migration(runner, tmp_path):
    from polymigrate.catalog import discover

    domain = tmp_path / "shop"
    (domain / "postgresql" / "schema").mkdir(parents=True)
    (domain / "domain.yaml").write_text("technologies:\n  postgresql: {}\n")
    (domain / "postgresql" / "V1__init.sql").write_text(V1)
    (domain / "postgresql" / "schema" / "tables.sql").write_text(DESIRED)
    res = runner.invoke(app, ["diff", "--current", str(domain / "postgresql"), "--desired", str(domain),
                              "--write", str(domain / "postgresql"), "--no-undo"])
    assert res.exit_code == 0, res.output
    cat = discover("shop", "postgresql", domain / "postgresql")
    assert cat.problems == [] and not [n for n in cat.notes if "schema" in str(n)]
    assert [m.script for m in cat.migrations["postgresql"]] == [
        "V1__init.sql", "V2__generated.sql", "V2.1__generated_concurrently.sql", "V2.2__generated_contract.sql"]


def test_placeholders_of_the_applied_migrations_come_from_the_command_line(runner, tmp_path):
    mig = tmp_path / "postgresql"
    mig.mkdir()
    (mig / "V1__t.sql").write_text("CREATE TABLE t (id int PRIMARY KEY, owner text DEFAULT '${owner}');\n")
    missing = runner.invoke(app, ["diff", "--current", str(mig), "--desired", str(mig)])
    assert missing.exit_code == 1 and "placeholder ${owner} has no value" in missing.output
    res = runner.invoke(app, ["diff", "--current", str(mig), "--desired", str(mig), "--placeholder", "owner=ops"])
    assert res.exit_code == 0 and "no difference" in res.output
    bad = runner.invoke(app, ["diff", "--current", str(mig), "--desired", str(mig), "--placeholder", "owner"])
    assert bad.exit_code == 2 and "expected key=value" in bad.output
