"""Flyway compatibility checked against Flyway 13 itself, not against values copied from it.

``make engines`` fetches flyway-core + flyway-database-postgresql from Maven Central and compiles
scripts/engines/FlywayCli.java (Flyway's own API behind flyway-commandline's argument style). Both
directions of the claim in docs/postgresql.md:

- a folder Flyway applied is adopted by polymigrate (``flyway-import``): nothing already applied
  runs again, and every checksum polymigrate computes equals the one Flyway wrote;
- Flyway reads polymigrate's ledger (``-defaultSchema=polymigrate -table=schema_history``):
  ``validate`` accepts it, ``info`` lists every file as Flyway would, ``migrate`` applies nothing.

The folder is what a team's history looks like after a while: sub-folders, repeatable views, a
file saved on Windows (BOM, CRLF), non-ASCII names and data, a function body with semicolons,
``1.2.10`` after ``1.2.9``, and a placeholder.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from polymigrate.catalog import discover
from polymigrate.cli import app

pytestmark = [pytest.mark.integration, pytest.mark.engine("flyway")]

ROOT = Path(__file__).resolve().parents[3]
WRAPPER = ROOT / "scripts" / "engines" / "FlywayCli.java"
PLACEHOLDERS = {"reader": "PUBLIC"}

FILES: dict[str, bytes] = {
    "tables/V1__create_customers.sql": b"CREATE TABLE customers (\n    id bigint PRIMARY KEY,\n    name text NOT NULL\n);\n",
    # saved on Windows: a byte-order mark and CRLF line ends
    "tables/V1.1__create_orders.sql": "\ufeffCREATE TABLE orders (\r\n    id bigint PRIMARY KEY,\r\n"
                                      "    customer_id bigint REFERENCES customers (id)\r\n);\r\n\r\n"
                                      "INSERT INTO customers VALUES (1, 'Zoë Ørsted'), (2, '東京 商店');\r\n".encode(),
    "tables/V1.2.9__add_order_note.sql": b"ALTER TABLE orders ADD COLUMN note text;\n",
    # sorts after 1.2.9 (not as text), a non-ASCII file name
    "V1.2.10__índice_pedidos.sql": "-- índice para búsquedas por cliente\n"
                                   "CREATE INDEX orders_customer_idx ON orders (customer_id);\n".encode(),
    "functions/V1.3__order_count.sql": b"CREATE FUNCTION order_count(c bigint) RETURNS bigint\n"
                                       b"LANGUAGE sql STABLE AS $$\n    SELECT count(*) FROM orders WHERE customer_id = c;\n$$;\n"
                                       b"GRANT SELECT ON customers TO ${reader};\n",
    "views/R__customer_orders.sql": b"CREATE OR REPLACE VIEW customer_orders AS\n"
                                    b"SELECT c.id, c.name, count(o.id) AS orders\nFROM customers c LEFT JOIN orders o "
                                    b"ON o.customer_id = c.id\nGROUP BY c.id, c.name;\n",
    "views/R__ünicode_names.sql": "CREATE OR REPLACE VIEW names AS SELECT name AS \"Name ✓\" FROM customers;\n".encode(),
}
ORDER = ["1", "1.1", "1.2.9", "1.2.10", "1.3"]


def write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def jdbc(url: str) -> list[str]:
    c = conninfo_to_dict(url)
    return [f"-url=jdbc:postgresql://{c.get('host', '127.0.0.1')}:{c.get('port', 5432)}/{c['dbname']}",
            f"-user={c.get('user', 'postgres')}"] + ([f"-password={c['password']}"] if c.get("password") else [])


def flyway_classpath() -> str:
    cp = os.environ.get("POLYMIGRATE_FLYWAY_CP", "")
    classes = Path(cp.split(os.pathsep)[0]) / "FlywayCli.class" if cp else None
    if classes is None or not classes.exists():
        pytest.fail("Flyway 13 is not installed here ($POLYMIGRATE_FLYWAY_CP not set or empty): run `make engines` "
                    "(or `bash scripts/engines.sh up flyway`), which fetches it and writes .engines/env", pytrace=False)
    stamp = classes.with_name(".source")  # sha256 of the FlywayCli.java it was compiled from
    if not stamp.exists() or stamp.read_text().strip() != hashlib.sha256(WRAPPER.read_bytes()).hexdigest():
        pytest.fail(f"{classes} was not compiled from this {WRAPPER.relative_to(ROOT)}: run `make engines` "
                    "to compile it again", pytrace=False)
    return cp


def flyway(commands: str, url: str, folder: Path, *extra: str, ledger: bool = False) -> tuple[int, list[str]]:
    """Run Flyway's commands (comma-separated) on ``url``; ``ledger``: on polymigrate's table instead of Flyway's."""
    args = ["java", "-cp", flyway_classpath(), "FlywayCli", commands, *jdbc(url), f"-locations=filesystem:{folder}",
            *(f"-placeholders.{k}={v}" for k, v in PLACEHOLDERS.items()), *extra]
    if ledger:
        args += ["-defaultSchema=polymigrate", "-table=schema_history"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    lines = out.stdout.splitlines()
    assert not [line for line in lines if line.startswith("error ")], out.stdout + out.stderr[-3000:]
    return out.returncode, lines


def info(lines: list[str]) -> list[tuple[str, ...]]:
    """(version, description, type, state, checksum, script) per migration, in Flyway's order."""
    return [tuple(line.split("\t")[1:]) for line in lines if line.startswith("info\t")]


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})  # no table cell folds a name
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def placeholder_args() -> list[str]:
    return [a for k, v in PLACEHOLDERS.items() for a in ("-p", f"{k}={v}")]


def ledger_rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as c:
        return c.execute("SELECT version, script, checksum, type, status FROM polymigrate.schema_history "
                         "ORDER BY installed_rank").fetchall()


def catalog_checksums(folder: Path) -> dict[str, int]:
    return {m.script: m.checksum for m in discover("shop", "postgresql", folder).applicable("postgresql")}


def test_a_folder_flyway_applied_is_adopted_without_running_anything_again(pg_url, tmp_path):
    folder = write(tmp_path / "sql", FILES)
    code, lines = flyway("migrate,info", pg_url, folder)
    assert code == 0 and "migrated 7" in lines, lines
    by_flyway = {row[5]: int(row[4]) for row in info(lines)}
    assert [row[0] for row in info(lines) if row[0]] == ORDER  # Flyway's order is polymigrate's
    assert by_flyway == catalog_checksums(folder)  # BOM, CRLF, unicode, placeholders: the same CRC32

    assert "imported 7 row(s)" in cli("flyway-import", "--url", pg_url, "-d", "shop")
    status = cli("status", "--url", pg_url, "--locations", str(folder), "-d", "shop")
    assert "pending" not in status and "changed" not in status and "outdated" not in status, status
    run = cli("migrate", "--url", pg_url, "--locations", str(folder), "-d", "shop", *placeholder_args())
    assert "0 applied" in run, run
    with psycopg.connect(pg_url) as c:
        assert c.execute("SELECT count(*) FROM customers").fetchone() == (2,)  # V1.1's insert did not run again

    # the team carries on with polymigrate: only the new file runs, and Flyway still reads the history
    write(folder, {"tables/V1.4__add_status.sql": b"ALTER TABLE orders ADD COLUMN status text;\n"})
    run = cli("migrate", "--url", pg_url, "--locations", str(folder), "-d", "shop", *placeholder_args())
    assert "1 applied" in run and "V1.4__add_status.sql" in run, run
    code, lines = flyway("validate,info,migrate", pg_url, folder, ledger=True)
    assert code == 0 and "validate ok" in lines and "migrated 0" in lines, lines
    assert [row[0] for row in info(lines) if row[0]] == ORDER + ["1.4"]
    assert {row[3] for row in info(lines)} == {"Success"}


def test_flyway_validates_what_polymigrate_wrote_and_applies_nothing_more(pg_url, tmp_path):
    folder = write(tmp_path / "sql", FILES)
    run = cli("migrate", "--url", pg_url, "--locations", str(folder), "-d", "shop", *placeholder_args())
    assert "7 applied" in run, run

    code, lines = flyway("validate,info,migrate", pg_url, folder, ledger=True)
    assert code == 0, lines
    assert "validate ok" in lines and "migrated 0" in lines
    rows = info(lines)
    assert {r[3] for r in rows} == {"Success"}, rows
    assert [r[0] for r in rows if r[0]] == ORDER
    assert {r[5]: int(r[4]) for r in rows} == {script: checksum for _, script, checksum, _, _ in ledger_rows(pg_url)}
    assert ("1.2.10", "índice pedidos", "SQL", "Success") in [r[:4] for r in rows]
    assert ("", "ünicode names", "SQL", "Success") in [r[:4] for r in rows]

    # a cosmetic edit (line ends converted back) changes neither checksum; a real edit is caught by both
    v11 = folder / "tables" / "V1.1__create_orders.sql"
    v11.write_bytes(v11.read_bytes().replace(b"\r\n", b"\n"))
    code, lines = flyway("validate", pg_url, folder, ledger=True)
    assert code == 0 and "validate ok" in lines, lines
    v11.write_bytes(v11.read_bytes() + b"ALTER TABLE orders ADD COLUMN placed_at timestamptz;\n")
    code, lines = flyway("validate", pg_url, folder, ledger=True)
    assert code == 1 and any(line.startswith("invalid 1.1 ") and "checksum mismatch" in line for line in lines), lines
    result = CliRunner().invoke(app, ["migrate", "--url", pg_url, "--locations", str(folder), "-d", "shop",
                                      *placeholder_args()])
    assert result.exit_code == 1 and "V1.1__create_orders.sql" in result.output


def test_a_repeatable_with_placeholders_carries_flyways_checksum(pg_url, make_pg_database, tmp_path):
    """Flyway checksums a repeatable file after replacing its placeholders (so a new value re-runs it);
    polymigrate writes that checksum in the ledger row too, so Flyway does not call the view outdated."""
    files = {**FILES, "views/R__customer_orders.sql": FILES["views/R__customer_orders.sql"].replace(
        b"CREATE OR REPLACE VIEW customer_orders AS", b"CREATE OR REPLACE VIEW customer_orders AS -- for ${reader}")}
    folder = write(tmp_path / "sql", files)
    cli("migrate", "--url", pg_url, "--locations", str(folder), "-d", "shop", *placeholder_args())
    code, lines = flyway("validate,info,migrate", pg_url, folder, ledger=True)
    assert code == 0 and "validate ok" in lines and "migrated 0" in lines, lines
    assert "0 applied" in cli("migrate", "--url", pg_url, "--locations", str(folder), "-d", "shop", *placeholder_args())

    # adoption: the Flyway row holds the replaced text's checksum, which polymigrate cannot know
    # without the values; it re-applies that one repeatable once (a repeatable is re-runnable by
    # definition), nothing else, and from then on both tools agree
    flyway_db = make_pg_database()
    code, lines = flyway("migrate", flyway_db, folder)
    assert code == 0 and "migrated 7" in lines, lines
    cli("flyway-import", "--url", flyway_db, "-d", "shop")
    run = cli("migrate", "--url", flyway_db, "--locations", str(folder), "-d", "shop", *placeholder_args())
    assert "1 applied" in run and "R__customer_orders.sql" in run, run
    assert "0 applied" in cli("migrate", "--url", flyway_db, "--locations", str(folder), "-d", "shop",
                              *placeholder_args())
    code, lines = flyway("validate", flyway_db, folder, ledger=True)
    assert code == 0 and "validate ok" in lines, lines


def test_a_missing_file_repaired_by_polymigrate_reads_as_deleted_in_flyway(pg_url, tmp_path):
    folder = write(tmp_path / "sql", FILES)
    cli("migrate", "--url", pg_url, "--locations", str(folder), "-d", "shop", *placeholder_args())
    (folder / "tables" / "V1.2.9__add_order_note.sql").unlink()  # merged into another file, say
    code, lines = flyway("validate", pg_url, folder, ledger=True)
    assert code == 1 and any("not resolved locally: 1.2.9" in line for line in lines), lines

    assert "marked deleted 1" in cli("repair", "--url", pg_url, "--locations", str(folder), "-d", "shop")
    code, lines = flyway("validate,info,migrate", pg_url, folder, ledger=True)
    assert code == 0 and "validate ok" in lines and "migrated 0" in lines, lines
    assert [r[:4] for r in info(lines) if r[0] == "1.2.9"] == [("1.2.9", "add order note", "SQL", "Deleted")]
    assert "0 applied" in cli("migrate", "--url", pg_url, "--locations", str(folder), "-d", "shop", *placeholder_args())


def test_a_baseline_taken_by_polymigrate_is_flyways_baseline(pg_url, tmp_path):
    """An existing database whose first versions were applied by hand: baselined, then migrated."""
    folder = write(tmp_path / "sql", FILES)
    with psycopg.connect(pg_url, autocommit=True) as c:
        for name in ("tables/V1__create_customers.sql", "tables/V1.1__create_orders.sql"):
            c.execute(FILES[name].decode().lstrip("\ufeff"))
    cli("baseline", "--url", pg_url, "--version", "1.1", "-d", "shop")
    run = cli("migrate", "--url", pg_url, "--locations", str(folder), "-d", "shop", *placeholder_args())
    assert "5 applied" in run, run
    code, lines = flyway("validate,info,migrate", pg_url, folder, ledger=True)
    assert code == 0 and "validate ok" in lines and "migrated 0" in lines, lines
    states = [(r[0], r[3]) for r in info(lines)]
    assert ("1", "Below Baseline") in states and ("1.1", "Baseline") in states
    assert [s for v, s in states if v in ("1.2.9", "1.2.10", "1.3")] == ["Success"] * 3
