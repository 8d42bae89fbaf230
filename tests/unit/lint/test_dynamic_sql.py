"""``dynamic-sql-concatenation`` and ``format()``: %s is safe exactly when its argument quotes itself.

A ``regclass`` (or another reg* type) prints as a correctly quoted, schema-qualified-when-needed
name, which is why ``format('ALTER TABLE %s …', target::regclass)`` is the idiom PostgreSQL's own
documentation uses; a ``text`` argument under %s is an injection.
"""

from __future__ import annotations

import pytest

from polymigrate.lint import lint_migration

from .helpers import migration

RULE = "dynamic-sql-concatenation"


def findings(tmp_path, sql: str):
    return [f for f in lint_migration(migration(tmp_path, "postgresql", sql)) if f.rule == RULE]


def fn(params: str, body: str, declare: str = "") -> str:
    return (f"CREATE OR REPLACE PROCEDURE p({params}) LANGUAGE plpgsql AS $$\n"
            + (f"DECLARE\n{declare}\n" if declare else "") + f"BEGIN\n{body}\nEND $$;")


@pytest.mark.parametrize("params, body, declare", [
    ("target regclass", "  EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS created_at timestamptz', target);", ""),
    ("target regclass", "  EXECUTE format('CREATE OR REPLACE TRIGGER t BEFORE UPDATE ON %s '\n"
                        "                 'FOR EACH ROW EXECUTE FUNCTION common.set_updated_at()', target);", ""),
    ("t text", "  EXECUTE format('ANALYZE %s', t::regclass);", ""),
    ("t text", "  EXECUTE format('ANALYZE %s', quote_ident(t));", ""),
    ("t text", "  EXECUTE format('ALTER TABLE %I SET (fillfactor = %s)', t, 90);", ""),
    ("t text", "  EXECUTE format('ANALYZE %s', rel);", "  rel regclass := t::regclass;"),
    ("r regrole, t regclass", "  EXECUTE format('GRANT SELECT ON %2$s TO %1$s', r, t);", ""),
    ("t text", "  EXECUTE format('SELECT %L, %I, 50%%', t, t);", ""),
])
def test_percent_s_of_a_self_quoting_argument_is_not_a_finding(tmp_path, params, body, declare):
    assert findings(tmp_path, fn(params, body, declare)) == []


@pytest.mark.parametrize("params, body, unquoted", [
    ("t text", "  EXECUTE format('DELETE FROM %s', t);", "t"),
    ("target regclass, col text", "  EXECUTE format('ALTER TABLE %s DROP COLUMN %s', target, col);", "col"),
    ("r regrole, t text", "  EXECUTE format('GRANT SELECT ON %2$s TO %1$s', r, t);", "t"),
    ("t text", "  EXECUTE format('ANALYZE %s', t || '_archive');", "t || '_archive'"),
    ("t text", "  EXECUTE format(stmt_template, t);", "stmt_template"),  # the format string itself is not a literal
])
def test_percent_s_of_text_is_a_finding_naming_the_argument(tmp_path, params, body, unquoted):
    found = findings(tmp_path, fn(params, body))
    assert len(found) == 1 and found[0].severity == "medium", found
    assert unquoted in found[0].message


@pytest.mark.parametrize("body", ["  EXECUTE 'DELETE FROM ' || t;", "  EXECUTE format('SELECT 1 FROM %I', t) || ' WHERE ' || t;"])
def test_concatenation_still_fires_high(tmp_path, body):
    found = findings(tmp_path, fn("t text", body))
    assert [f.severity for f in found] == ["high"]


def test_the_common_sample_passes_production_lint():
    from pathlib import Path

    from polymigrate.lint import lint_catalog
    from polymigrate.spec import load_project
    from polymigrate.catalog import discover_domain

    project = load_project(Path(__file__).resolve().parents[3] / "migration_specs")
    report = lint_catalog(discover_domain(project.domains["common"]))
    assert [str(f) for f in report.blocking(project.environments["production"].policy.lint_block_at)] == []
