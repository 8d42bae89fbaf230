"""Acceptance: a database Flyway migrated is adopted and continues; nothing re-runs, checksums match."""

from __future__ import annotations

import zlib
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from polymigrate.adapters.postgresql.adapter import PostgresAdapter
from polymigrate.catalog import discover
from polymigrate.cli import app
from polymigrate.errors import PermanentError
from polymigrate.ledger import RunContext, Status
from polymigrate.reconcile import State, reconcile

pytestmark = pytest.mark.integration

# Flyway 10's own DDL for PostgreSQL (createMetaDataTable.sql)
FLYWAY_DDL = """
CREATE TABLE "public"."flyway_schema_history" (
    "installed_rank" INT NOT NULL, "version" VARCHAR(50), "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL, "script" VARCHAR(1000) NOT NULL, "checksum" INTEGER,
    "installed_by" VARCHAR(100) NOT NULL, "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL, "success" BOOLEAN NOT NULL);
ALTER TABLE "public"."flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON "public"."flyway_schema_history" ("success");
"""

FILES = {
    "V1__create_orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY);\r\n\r\nINSERT INTO orders VALUES (1);\r\n",
    "V1.1__add_total.sql": "ALTER TABLE orders ADD COLUMN total numeric;\n",
    "R__orders_view.sql": "CREATE OR REPLACE VIEW orders_view AS SELECT id FROM orders;\n",
}


def flyway_crc(text: str) -> int:
    """Flyway's checksum, computed independently of polymigrate: CRC32 over the lines without terminators."""
    value = zlib.crc32("".join(text.splitlines()).encode("utf-8"))
    return value - (1 << 32) if value >= (1 << 31) else value


def flyway_migrated(url: str, folder: Path) -> None:
    """What `flyway migrate` leaves behind: the schema changes plus its history rows."""
    folder.mkdir(parents=True)
    for name, text in FILES.items():
        (folder / name).write_bytes(text.encode())
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(FLYWAY_DDL)
        rank = 0
        for name, version, desc in (("V1__create_orders.sql", "1", "create orders"),
                                    ("V1.1__add_total.sql", "1.1", "add total"),
                                    ("R__orders_view.sql", None, "orders view")):
            c.execute(FILES[name])
            rank += 1
            c.execute("INSERT INTO flyway_schema_history VALUES (%s, %s, %s, 'SQL', %s, %s, 'flyway', now(), 12, true)",
                      (rank, version, desc, name, flyway_crc(FILES[name])))


def ctx() -> RunContext:
    return RunContext(domain="shop", environment="testing", region="r1", actor="tester@host", run_id="adopt")


def test_a_flyway_database_is_adopted_and_continues_without_rerunning_anything(pg_url, tmp_path):
    folder = tmp_path / "sql"
    flyway_migrated(pg_url, folder)
    runner = CliRunner()
    imported = runner.invoke(app, ["baseline", "--from-flyway", "--url", pg_url, "-d", "shop"])
    assert imported.exit_code == 0, imported.output
    assert "imported 3 row(s)" in imported.output

    a = PostgresAdapter.from_url(pg_url, domain="shop")
    try:
        cat = discover("shop", "postgresql", folder)
        states = {i.script: i.state for i in reconcile(cat.applicable("postgresql"), a.read_ledger())}
        assert states == {"V1__create_orders.sql": State.SUCCESS, "V1.1__add_total.sql": State.SUCCESS,
                          "R__orders_view.sql": State.SUCCESS}  # every checksum matches Flyway's
        [first] = [e for e in a.read_ledger() if e.version == "1"]
        assert (first.installed_rank, first.installed_by, first.execution_time) == (1, "flyway", 12)
    finally:
        a.close()

    (folder / "V2__add_status.sql").write_text("ALTER TABLE orders ADD COLUMN status text;\n")
    run = runner.invoke(app, ["migrate", "--url", pg_url, "--locations", str(folder), "-d", "shop"])
    assert run.exit_code == 0, run.output
    assert "1 applied" in run.output and "V2__add_status.sql" in run.output
    with psycopg.connect(pg_url) as c:
        assert c.execute("SELECT count(*) FROM orders").fetchone() == (1,)  # V1's insert did not run again
        rows = c.execute("SELECT installed_rank, version, status FROM polymigrate.schema_history "
                         "WHERE domain = 'shop' ORDER BY installed_rank").fetchall()
    assert rows == [(1, "1", "success"), (2, "1.1", "success"), (3, None, "success"), (4, "2", "success")]

    again = runner.invoke(app, ["flyway-import", "--url", pg_url, "-d", "shop"])
    assert again.exit_code == 0 and "already imported" in again.output


def test_flyway_baseline_and_undo_rows_map_onto_statuses(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(FLYWAY_DDL)
        c.execute("INSERT INTO flyway_schema_history VALUES "
                  "(1, '1', '<< Flyway Baseline >>', 'BASELINE', '<< Flyway Baseline >>', NULL, 'f', now(), 0, true),"
                  "(2, '2', 'b', 'SQL', 'V2__b.sql', 42, 'f', now(), 5, true),"
                  "(3, '2', 'b', 'UNDO_SQL', 'U2__b.sql', 43, 'f', now(), 5, true),"
                  "(4, '3', 'java', 'JDBC', 'db.migration.V3__java', NULL, 'f', now(), 5, true)")
    a = PostgresAdapter.from_url(pg_url, domain="shop")
    try:
        assert a.import_flyway(ctx()) == 4
        # a Java migration has no file polymigrate could compare: kept as applied, not "missing"
        assert [e.status for e in a.read_ledger()] == [Status.BASELINE, Status.UNDONE, Status.SUCCESS,
                                                       Status.BASELINE]
    finally:
        a.close()


def test_a_flyway_history_with_a_version_applied_twice_still_imports(pg_url):
    """The ledger admits one success per version: Flyway's own double apply keeps its first row."""
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(FLYWAY_DDL)
        c.execute("INSERT INTO flyway_schema_history VALUES "
                  "(1, '1', 'a', 'SQL', 'V1__a.sql', 42, 'f', now(), 5, true),"
                  "(2, '1', 'a', 'SQL', 'V1__a.sql', 42, 'f', now(), 5, true),"
                  "(3, '2', 'b', 'SQL', 'V2__b.sql', 43, 'f', now(), 5, true),"
                  "(4, '2', 'b', 'DELETE', 'V2__b.sql', 43, 'f', now(), 0, true),"
                  "(5, '2', 'b', 'SQL', 'V2__b.sql', 43, 'f', now(), 5, true)")
    a = PostgresAdapter.from_url(pg_url, domain="shop")
    try:
        assert a.import_flyway(ctx()) == 5
        rows = [(e.installed_rank, e.status, e.progress.get("duplicate_of")) for e in a.read_ledger()]
    finally:
        a.close()
    assert rows == [(1, Status.SUCCESS, None), (2, Status.DELETED, 1), (3, Status.DELETED, None),
                    (4, Status.DELETED, None), (5, Status.SUCCESS, None)]


def test_importing_into_a_ledger_that_is_in_use_is_refused(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(FLYWAY_DDL)
        c.execute("INSERT INTO flyway_schema_history VALUES (1, '1', 'a', 'SQL', 'V1__a.sql', 1, 'f', now(), 0, true)")
    a = PostgresAdapter.from_url(pg_url, domain="shop")
    try:
        a.baseline("5", "by hand", ctx())
        with pytest.raises(PermanentError) as info:
            a.import_flyway(ctx())
        assert "mix two histories" in str(info.value)
        with pytest.raises(PermanentError) as info:
            a.import_flyway(ctx(), schema="other")
        assert "no Flyway history table other.flyway_schema_history" in str(info.value)
    finally:
        a.close()
