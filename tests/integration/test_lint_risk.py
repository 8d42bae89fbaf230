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


def test_tables_missing_on_the_target_are_reported_not_fatal(tmp_path, target):
    report = _lint(tmp_path, target, "ALTER TABLE nowhere ALTER COLUMN v TYPE bigint;")
    [impact] = report.impacts
    assert "not found" in impact.note and impact.risk == "low"
