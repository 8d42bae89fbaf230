"""Lint findings that blocked safe, real migrations (issue 14, item 7), and what lint missed.

A false positive costs as much as a miss here: the risk score feeds approval, so a file that is
scored high for nothing teaches reviewers to wave high scores through.
"""

from __future__ import annotations

import pytest

from polymigrate.catalog import discover
from polymigrate.lint import lint_catalog, lint_file, lint_migration

from .helpers import migration


def _rules(tmp_path, sql: str, technology: str = "postgresql") -> dict[str, list]:
    out: dict[str, list] = {}
    for f in lint_migration(migration(tmp_path, technology, sql)):
        if not f.suppressed:
            out.setdefault(f.rule, []).append(f)
    return out


@pytest.mark.parametrize("sql, quiet", [
    # staging tables a file creates, fills and drops: nothing anyone else reads
    ("CREATE TABLE stage AS SELECT * FROM orders;\nCREATE INDEX stage_id ON stage (id);\n"
     "TRUNCATE stage;\nDROP INDEX stage_id;\nDROP TABLE stage;\n",
     {"ban-drop-table", "truncate-table", "require-concurrent-index-creation", "require-concurrent-index-deletion"}),
    ("SELECT * INTO stage FROM orders;\nCREATE INDEX ON stage (id);\nTRUNCATE stage;\nDROP TABLE stage;\n",
     {"ban-drop-table", "truncate-table", "require-concurrent-index-creation"}),
    ("CREATE TEMP TABLE scratch (id bigint);\nINSERT INTO scratch SELECT id FROM orders;\n"
     "CREATE INDEX scratch_id ON scratch (id);\nDELETE FROM scratch;\nDROP TABLE scratch;\n",
     {"ban-drop-table", "require-concurrent-index-creation", "unbounded-delete-or-update"}),
    ("CREATE TEMPORARY TABLE ids ON COMMIT DROP AS SELECT id FROM orders;\nTRUNCATE ids;\n",
     {"truncate-table"}),
])
def test_objects_created_earlier_in_the_same_file_are_not_flagged(tmp_path, sql, quiet):
    fired = _rules(tmp_path, sql)
    assert not quiet & set(fired), {r: [f.message for f in fired[r]] for r in quiet & set(fired)}


def test_the_same_statements_on_existing_tables_are_still_flagged(tmp_path):
    fired = _rules(tmp_path, "CREATE TABLE stage AS SELECT * FROM orders;\nDROP TABLE orders;\nTRUNCATE orders;\n"
                             "CREATE INDEX o_id ON orders (id);\n")
    assert {"ban-drop-table", "truncate-table", "require-concurrent-index-creation"} <= set(fired)


def test_varchar_widening_is_not_scored_as_a_rewrite(tmp_path):
    [f] = _rules(tmp_path, "ALTER TABLE orders ALTER COLUMN note TYPE varchar(200);")["changing-column-type"]
    assert f.severity == "medium" and "varchar" in f.message  # unknown old width: not "high"
    report = lint_file(migration(tmp_path / "b", "postgresql", "ALTER TABLE orders ALTER COLUMN note TYPE varchar(200);"))
    assert report.risk != "high"


def test_varchar_widening_of_a_column_the_change_set_created_is_quiet(tmp_path):
    folder = tmp_path / "postgresql"
    folder.mkdir()
    (folder / "V1__orders.sql").write_text("CREATE TABLE orders (id bigint, note varchar(40), total numeric(10,2));\n")
    (folder / "V2__widen.sql").write_text("ALTER TABLE orders ALTER COLUMN note TYPE varchar(200);\n"
                                          "ALTER TABLE orders ALTER COLUMN total TYPE numeric(14,2);\n")
    (folder / "V3__narrow.sql").write_text("ALTER TABLE orders ALTER COLUMN note TYPE varchar(10);\n")
    report = lint_catalog(discover("shop", "postgresql", folder), collisions_check=False)
    by_file = {(f.file.rsplit("/", 1)[1], f.rule) for f in report.findings}
    assert ("V2__widen.sql", "changing-column-type") not in by_file
    assert ("V3__narrow.sql", "changing-column-type") in by_file  # narrowing rewrites (and may fail)


def test_an_analyze_only_file_is_transactional(tmp_path):
    fired = _rules(tmp_path, "CREATE TABLE t (id bigint);\nINSERT INTO t VALUES (1);\nANALYZE t;\n")
    assert "prefer-robust-stmts" not in fired
    fired = _rules(tmp_path / "v", "CREATE TABLE t (id bigint);\nVACUUM t;\n")
    assert "prefer-robust-stmts" in fired  # VACUUM really runs outside a transaction


@pytest.mark.parametrize("alias", ["local rcall = redis.call", "local r = redis.pcall", "local call = redis.call;"])
def test_redis_rules_see_through_an_alias_of_redis_call(tmp_path, alias):
    fired = _rules(tmp_path, f"{alias}\nlocal keys = {alias.split()[1]}('KEYS', 'user:*')\nreturn #keys\n", "redis")
    assert "redis-keys-command" in fired


def test_file_commits_and_do_blocks_that_commit_are_named(tmp_path):
    fired = _rules(tmp_path, "CREATE TABLE a (id bigint);\nCOMMIT;\nINSERT INTO a VALUES (1);\n")
    [f] = fired["explicit-transaction-control"]
    assert f.line == 2 and "COMMIT" in f.message
    fired = _rules(tmp_path / "do", "DO $$\nBEGIN\n  FOR i IN 1..3 LOOP\n    INSERT INTO a VALUES (i);\n"
                                    "    COMMIT;\n  END LOOP;\nEND $$;\n")
    [f] = fired["commit-inside-do-block"]
    assert f.line == 1 and "re-runs" in f.message
