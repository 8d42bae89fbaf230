"""Impact-aware risk against a real PostgreSQL: the same statement scores by the table it touches."""

from __future__ import annotations

import psycopg
import pytest

from polymigrate.lint import RISK_LEVELS, lint_file

from tests.unit.lint.helpers import migration

pytestmark = pytest.mark.integration


@pytest.fixture
def target(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big (id int PRIMARY KEY, v int, label varchar(20))")
        conn.execute("INSERT INTO big SELECT g, g, 'x' FROM generate_series(1, 1000000) g")
        conn.execute("CREATE TABLE empty (id int PRIMARY KEY, v int, label varchar(20))")
        conn.execute("CREATE SCHEMA shop")
        conn.execute("CREATE TABLE shop.orders (id int, v int)")
        conn.execute("ANALYZE big")
        conn.read_only = True
        yield conn


def _lint(tmp_path, conn, sql, **kw):
    return lint_file(migration(tmp_path, "postgresql", sql), connection=conn, **kw)


def test_type_change_scores_higher_on_a_million_rows_than_on_an_empty_table(tmp_path, target):
    big = _lint(tmp_path / "a", target, "ALTER TABLE big ALTER COLUMN v TYPE bigint;")
    empty = _lint(tmp_path / "b", target, "ALTER TABLE empty ALTER COLUMN v TYPE bigint;")
    [ib], [ie] = big.impacts, empty.impacts
    assert ib.rows == pytest.approx(1_000_000, rel=0.05) and ie.rows == 0
    assert ib.seconds > ie.seconds and ib.bytes > 30 * 1024 * 1024
    assert RISK_LEVELS.index(big.risk) > RISK_LEVELS.index(empty.risk)
    assert empty.risk == "low"
    fb = next(f for f in big.findings if f.rule == "changing-column-type")
    fe = next(f for f in empty.findings if f.rule == "changing-column-type")
    assert RISK_LEVELS.index(fb.severity) > RISK_LEVELS.index(fe.severity)
    assert "rows" in fb.message  # the estimate is shown to the approver


def test_without_a_connection_the_statement_alone_decides(tmp_path):
    report = lint_file(migration(tmp_path, "postgresql", "ALTER TABLE big ALTER COLUMN v TYPE bigint;"))
    assert report.risk == "high" and report.impacts[0].seconds is None


def test_varchar_to_text_is_a_catalog_only_change_on_the_target(tmp_path, target):
    report = _lint(tmp_path, target, "ALTER TABLE big ALTER COLUMN label TYPE text;")
    [impact] = report.impacts
    assert impact.work == "metadata" and impact.seconds == 0 and report.risk == "low"


def test_unqualified_names_resolve_in_the_domain_schema(tmp_path, target):
    report = _lint(tmp_path, target, "ALTER TABLE orders ALTER COLUMN v TYPE bigint;", schema="shop")
    [impact] = report.impacts
    assert impact.rows == 0 and "not found" not in impact.note


def test_a_table_missing_on_the_target_scores_unknown_not_low(tmp_path, target):
    """Fail closed (issue 14): a table lint cannot size may be the biggest one."""
    report = _lint(tmp_path, target, "ALTER TABLE nowhere ALTER COLUMN v TYPE bigint;")
    [impact] = report.impacts
    assert "not found" in impact.note and impact.risk == "unknown"
    assert report.risk == "unknown"
    fired = {f.rule: f for f in report.findings}
    assert fired["changing-column-type"].severity == "high"  # not lowered to the (unknown) table's level
    assert fired["table-not-found-on-target"].severity == "high" and "nowhere" in fired["table-not-found-on-target"].message
    assert report.blocking("high")


def test_an_unresolved_placeholder_says_so_and_scores_unknown(tmp_path, target):
    report = _lint(tmp_path, target, "ALTER TABLE ${schema}.orders ALTER COLUMN v TYPE bigint;")
    [impact] = report.impacts
    assert impact.risk == "unknown" and "placeholder" in impact.note
    resolved = _lint(tmp_path / "b", target, "ALTER TABLE ${schema}.orders ALTER COLUMN v TYPE bigint;",
                     placeholders={"schema": "shop"})
    assert resolved.risk == "low" and resolved.impacts[0].rows == 0


def test_a_table_the_change_set_creates_is_not_unknown(tmp_path, target):
    from polymigrate.catalog import discover
    from polymigrate.lint import lint_catalog

    folder = tmp_path / "postgresql"
    folder.mkdir()
    (folder / "V1__t.sql").write_text("CREATE TABLE fresh (id bigint, v int);\n")
    (folder / "V2__t.sql").write_text("ALTER TABLE fresh ALTER COLUMN v TYPE bigint;\n")
    report = lint_catalog(discover("shop", "postgresql", folder), connection=target, collisions_check=False)
    assert report.risk == "low" and "table-not-found-on-target" not in {f.rule for f in report.findings}


def test_varchar_widening_on_the_target_is_catalog_only_and_narrowing_is_not(tmp_path, target):
    wide = _lint(tmp_path, target, "ALTER TABLE big ALTER COLUMN label TYPE varchar(200);")
    [iw] = wide.impacts
    assert iw.work == "metadata" and wide.risk == "low"
    narrow = _lint(tmp_path / "n", target, "ALTER TABLE big ALTER COLUMN label TYPE varchar(10);")
    assert narrow.impacts[0].work == "rewrite" and narrow.risk != "low"


def test_lint_url_resolves_the_environment_placeholders(tmp_path, target, pg_url):
    import json
    import shutil

    from typer.testing import CliRunner

    from polymigrate.cli import app
    from tests.conftest import SPECS

    specs = tmp_path / "specs"
    shutil.copytree(SPECS / "environments", specs / "environments")
    env = specs / "environments" / "testing.yaml"
    env.write_text(env.read_text() + "placeholders:\n  schema: public\n")
    (specs / "shop" / "postgresql").mkdir(parents=True)
    (specs / "shop" / "domain.yaml").write_text("description: t\ntechnologies:\n  postgresql: {}\n")
    (specs / "shop" / "postgresql" / "V1__narrow.sql").write_text("ALTER TABLE ${schema}.big ALTER COLUMN v TYPE smallint;\n")
    runner = CliRunner()
    without = runner.invoke(app, ["lint", str(specs), "--url", pg_url, "--json"])
    with_env = runner.invoke(app, ["lint", str(specs), "--url", pg_url, "-e", "testing", "--json"])
    assert without.exit_code == 1, without.output  # fail closed: the table cannot be found, so it is not "low"
    assert json.loads(without.stdout)["domains"]["shop"]["risk"] == "unknown"
    report = json.loads(with_env.stdout)["domains"]["shop"]
    [impact] = report["impacts"]
    assert impact["table"] == "public.big" and impact["rows"] > 900_000, with_env.output


def test_a_backfill_scores_by_its_batches_not_by_the_whole_table(tmp_path, target):
    plain = _lint(tmp_path / "a", target, "UPDATE big SET v = v + 1;")
    batched = _lint(tmp_path / "b", target, "-- polymigrate: backfill=true\nUPDATE big SET v = v + 1;")
    [ip], [ib] = plain.impacts, batched.impacts
    assert ip.seconds > 0 and ib.seconds == 0 and "backfill" in ib.note
    assert batched.risk == "low" and RISK_LEVELS.index(plain.risk) >= RISK_LEVELS.index(batched.risk)
