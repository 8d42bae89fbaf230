"""Statement splitting and transaction detection with pglast (no server needed)."""

from __future__ import annotations

import pytest

from polymigrate.adapters.postgresql.statements import (DO_COMMIT, check_transaction_control, needs_autocommit, split,
                                                        steps)
from polymigrate.errors import PermanentError


@pytest.mark.parametrize("sql, why", [
    ("CREATE INDEX CONCURRENTLY ix ON t (a)", "CREATE INDEX CONCURRENTLY"),
    ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix ON s.t (a)", "CREATE INDEX CONCURRENTLY"),
    ("DROP INDEX CONCURRENTLY IF EXISTS ix", "DROP INDEX CONCURRENTLY"),
    ("REINDEX INDEX CONCURRENTLY ix", "REINDEX CONCURRENTLY"),
    ("REINDEX TABLE CONCURRENTLY t", "REINDEX CONCURRENTLY"),
    ("VACUUM (ANALYZE) t", "VACUUM"),
    ("ALTER SYSTEM SET work_mem = '64MB'", "ALTER SYSTEM"),
    ("CREATE DATABASE other", "CREATE DATABASE"),
    ("DROP DATABASE other", "DROP DATABASE"),
])
def test_statements_that_cannot_run_in_a_transaction_are_detected(sql, why):
    [s] = split(sql)
    assert s.non_transactional == why
    assert needs_autocommit([s], None)


@pytest.mark.parametrize("sql", [
    "CREATE INDEX ix ON t (a)",
    "ANALYZE t",  # same node as VACUUM, but fine in a transaction
    "REINDEX TABLE t",
    "SELECT 'CREATE INDEX CONCURRENTLY x ON t (a)'",  # in a string
    "-- CREATE INDEX CONCURRENTLY x ON t (a)\nSELECT 1",  # in a comment
    "DO $$ BEGIN EXECUTE 'VACUUM t'; END $$",  # in a function body
    "ALTER TYPE mood ADD VALUE 'meh'",  # fine in a transaction since PostgreSQL 12
])
def test_ordinary_statements_stay_transactional(sql):
    assert not needs_autocommit(split(sql, server_version=150000), None)


def test_enum_add_value_needs_autocommit_before_postgresql_12():
    [s] = split("ALTER TYPE mood ADD VALUE 'meh'", server_version=110000)
    assert s.non_transactional


def test_the_header_directive_overrides_detection_both_ways():
    plain = split("CREATE TABLE t (a int)")
    concurrent = split("CREATE INDEX CONCURRENTLY ix ON t (a)")
    assert needs_autocommit(plain, False)
    assert not needs_autocommit(concurrent, True)


def test_each_statement_knows_its_line_even_after_comments_and_blank_lines():
    body = "-- header\n\nCREATE TABLE a (x int);\n/* block\n comment */\nCREATE TABLE b (\n  y int\n); SELECT 1;\n"
    stmts = split(body)
    assert [(s.line, s.text.split()[0]) for s in stmts] == [(3, "CREATE"), (6, "CREATE"), (8, "SELECT")]
    assert stmts[1].line_of(20) == 7  # server error cursor inside the statement maps to the file line


def test_unicode_before_a_statement_does_not_shift_offsets():
    stmts = split("COMMENT ON TABLE t IS 'café ☕';\nSELECT 2;")
    assert stmts[1].text == "SELECT 2" and stmts[1].line == 2


def test_a_syntax_error_names_the_file_and_line():
    with pytest.raises(PermanentError) as info:
        split("SELECT 1;\n\nSELEC 2;\n", file="sql/V3__bad.sql")
    assert "sql/V3__bad.sql:3" in str(info.value)
    assert "SELEC" in str(info.value)


@pytest.mark.parametrize("control", ["ROLLBACK", "ABORT", "PREPARE TRANSACTION 'x'", "COMMIT PREPARED 'x'"])
def test_rollback_and_two_phase_commit_are_refused_with_their_line(control):
    stmts = split(f"CREATE TABLE a (x int);\n{control};\nCREATE TABLE b (y int);")
    with pytest.raises(PermanentError) as info:
        check_transaction_control(stmts, "V1__x.sql")
    assert "V1__x.sql:2" in str(info.value) and "SAVEPOINT" in str(info.value)


@pytest.mark.parametrize("control", ["COMMIT", "BEGIN", "START TRANSACTION", "END"])
def test_boundaries_a_file_puts_are_accepted_unless_the_header_promises_one_transaction(control):
    stmts = split(f"CREATE TABLE a (x int);\n{control};\nCREATE TABLE b (y int);")
    check_transaction_control(stmts, "V1__x.sql")
    assert needs_autocommit(stmts, None)
    with pytest.raises(PermanentError) as info:
        check_transaction_control(stmts, "V1__x.sql", transactional=True)
    assert "V1__x.sql:2" in str(info.value) and "transactional=true" in str(info.value)


def _shape(sql: str, transactional=None) -> list[tuple]:
    return [(tuple(s.index for s in st.statements), st.transaction, st.end)
            for st in steps(split(sql), transactional)]


def test_steps_follow_the_boundaries_the_file_puts():
    # Flyway commits what precedes a COMMIT together; BEGIN … COMMIT is one transaction, as in psql
    assert _shape("SELECT 1; SELECT 2; COMMIT; SELECT 3;") == [((0, 1, 2), True, 3), ((3,), True, 4)]
    assert _shape("SELECT 1; BEGIN; SELECT 2; COMMIT; SELECT 3; SELECT 4;") == [
        ((0,), True, 1), ((1, 2, 3), True, 4), ((4, 5), True, 6)]
    # a statement that cannot run in a transaction is a step of its own
    assert _shape("SELECT 1; CREATE INDEX CONCURRENTLY i ON t (a); SELECT 2;") == [
        ((0,), True, 1), ((1,), False, 2), ((2,), True, 3)]
    # transactional=false: every statement outside an explicit block on its own
    assert _shape("SELECT 1; SELECT 2; BEGIN; SELECT 3; SELECT 4; END;", transactional=False) == [
        ((0,), True, 1), ((1,), True, 2), ((2, 3, 4, 5), True, 6)]


def test_begin_options_are_kept_for_the_transaction_they_open():
    [step] = steps(split("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY; SELECT 1; COMMIT;"), None)
    assert dict(step.begin_options) == {"transaction_isolation": "serializable", "transaction_read_only": True}


@pytest.mark.parametrize("sql, commits", [
    ("DO $$ BEGIN FOR i IN 1..3 LOOP INSERT INTO t VALUES (i); COMMIT; END LOOP; END $$", True),
    ("DO LANGUAGE plpgsql $$ BEGIN PERFORM 1; EXCEPTION WHEN others THEN ROLLBACK; END $$", True),
    ("DO $$ BEGIN -- commit later\n PERFORM 'rollback'; END $$", False),  # words in a comment or a string
    ("DO $$ BEGIN PERFORM 1; END $$", False),
])
def test_a_do_block_that_commits_runs_outside_a_transaction(sql, commits):
    [s] = split(sql)
    assert (s.non_transactional == DO_COMMIT) is commits


def test_savepoints_are_allowed():
    check_transaction_control(split("SAVEPOINT a; SELECT 1; RELEASE SAVEPOINT a;"), "V1__x.sql")


def test_concurrent_index_targets_are_recorded_for_repair():
    create, drop, reindex = split("CREATE INDEX CONCURRENTLY ix ON s.t (a); DROP INDEX CONCURRENTLY s.old; "
                                  "REINDEX INDEX CONCURRENTLY s.ix;")
    assert (create.index_target.name, create.index_target.schema, create.index_target.table) == ("ix", "s", "t")
    assert (drop.index_target.action, drop.index_target.name, drop.index_target.schema) == ("drop", "old", "s")
    assert (reindex.index_target.action, reindex.index_target.name) == ("reindex", "ix")


def test_a_file_of_comments_only_has_no_statements():
    assert split("-- nothing yet\n") == []


# -- which files need the session reset (issue 24) ---------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL DEFAULT 'x')", "CREATE INDEX i ON t (name)",
    "COMMENT ON TABLE t IS 'x'", "ALTER TABLE t ADD COLUMN qty int NOT NULL DEFAULT 0",
    "DROP TABLE t", "CREATE VIEW v AS SELECT 1", "ALTER TABLE t RENAME TO u",
])
def test_plain_ddl_cannot_change_the_session(sql):
    assert not split(sql)[0].session


@pytest.mark.parametrize("sql", [
    "SET search_path = evil", "SET LOCAL lock_timeout = '1s'", "RESET ALL", "SET ROLE someone",
    "SET SESSION AUTHORIZATION someone", "CREATE TEMP TABLE s (id int)", "CREATE TEMP VIEW v AS SELECT 1",
    "LISTEN chan", "PREPARE p AS SELECT 1", "DECLARE c CURSOR WITH HOLD FOR SELECT 1", "DISCARD ALL",
    "SELECT set_config('search_path', 'evil', false)", "DO $$ BEGIN PERFORM 1; END $$", "CALL p()",
    "INSERT INTO t VALUES (1)",  # a trigger or a default (nextval sets currval) runs code we do not see
    "ALTER TABLE t ADD COLUMN id bigserial", "ALTER TABLE t ADD COLUMN id int GENERATED ALWAYS AS IDENTITY",
    "ALTER TABLE t ADD COLUMN at timestamptz DEFAULT now()", "CREATE INDEX i ON t (lower(name))",
    "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = a AS $$ SELECT 1 $$",
])
def test_anything_that_may_change_the_session_is_reset_after(sql):
    assert split(sql)[0].session
