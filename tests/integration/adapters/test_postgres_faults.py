"""Faults and hostile files on the real PostgreSQL server (issue 14): a lost lock session, a second
success for one version, session state leaking between files, Flyway files with their own
transaction boundaries, connection errors and passwords in URLs.

The CLI runs in a subprocess where a process must be cut off mid-file; the sessions to cut are
found in pg_stat_activity, never guessed with a sleep.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from polymigrate.adapters.postgresql.adapter import PostgresAdapter
from polymigrate.catalog import discover
from polymigrate.errors import MigrationError, PermanentError, TransientError
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext, Status

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "from polymigrate.cli import main; main()"]


def q(url: str, sql: str, *params):
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql, params or None)
        return cur.fetchall() if cur.description else None


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def cli(url: str, folder: Path, *extra: str, verb: str = "migrate") -> list[str]:
    return [*CLI, verb, "--url", url, "--locations", str(folder), *extra]


def wait_for_query(url: str, needle: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if q(url, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                  "AND query LIKE %s AND pid <> pg_backend_pid()", f"%{needle}%"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"CLI exited early ({proc.returncode}): {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"no session ran {needle!r} within {timeout}s")


def terminate_lock_sessions(url: str) -> int:
    """What idle_session_timeout, a proxy dropping connections or an operator does to the lock's session."""
    rows = q(url, "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = current_database() "
                  "AND application_name LIKE 'polymigrate lock:%%'")
    return len(rows or [])


def successes(url: str) -> list[tuple]:
    return q(url, "SELECT version, count(*) FROM polymigrate.schema_history WHERE status = 'success' "
                  "AND version IS NOT NULL GROUP BY version ORDER BY version")


def ctx(**kw) -> RunContext:
    return RunContext(**{"domain": "adhoc", "actor": "tester@host", "run_id": "run-1", "lock_wait_seconds": 5, **kw})


def migrations(folder: Path, domain: str = "adhoc"):
    cat = discover(domain, "postgresql", folder)
    assert not cat.problems, cat.problems
    return cat.applicable("postgresql")


# -- 1. a lost lock session never lets a second run apply the same file ------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("header", [
    "",                                         # one transaction with its ledger row
    "-- polymigrate: transactional=false\n",  # statement by statement with progress rows
])
def test_a_run_whose_lock_session_is_cut_mid_file_never_lets_a_second_run_apply_it_again(pg_url, tmp_path, header):
    folder = write(tmp_path / "sql", {
        "V1__counter.sql": "CREATE TABLE counter (id int PRIMARY KEY, n int);\nINSERT INTO counter VALUES (1, 0);\n",
        # ${pause} changes what runs, not the checksum: run B does not wait
        "V2__bump.sql": header + "UPDATE counter SET n = n + 1 WHERE pg_sleep(${pause}) IS NOT NULL;\n"
                                 "UPDATE counter SET n = n + 10 WHERE n < 10;\n",
    })
    run_a = subprocess.Popen(cli(pg_url, folder, "-p", "pause=4"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        wait_for_query(pg_url, "pg_sleep", run_a)
        assert terminate_lock_sessions(pg_url) == 1
        run_b = subprocess.run(cli(pg_url, folder, "-p", "pause=0"), capture_output=True, text=True, timeout=60)
        assert run_b.returncode == 0, run_b.stderr
    finally:
        out_a, err_a = run_a.communicate(timeout=60)
    assert q(pg_url, "SELECT n FROM counter") == [(11,)]  # V2 applied exactly once (twice: 12)
    assert successes(pg_url) == [("1", 1), ("2", 1)]
    assert run_a.returncode == 1 and "transient" in err_a, (out_a, err_a)  # run A was told, and may retry


def test_the_ledger_refuses_a_second_success_for_one_version(pg_url, tmp_path):
    folder = write(tmp_path / "sql", {"V1__a.sql": "CREATE TABLE a (id int);\n"})
    a = PostgresAdapter.from_url(pg_url, domain="adhoc")
    try:
        migrate(a, migrations(folder), ctx())
    finally:
        a.close()
    with pytest.raises(psycopg.errors.UniqueViolation):
        q(pg_url, "INSERT INTO polymigrate.schema_history (installed_rank, version, description, type, script, "
                  "checksum, installed_by, execution_time, success, status, domain) "
                  "SELECT 2, version, description, type, script, checksum, 'other run', 0, true, 'success', domain "
                  "FROM polymigrate.schema_history")
    # other domains, undo rows, repeatables and re-applying after an undo stay possible
    q(pg_url, "INSERT INTO polymigrate.schema_history (installed_rank, version, description, type, script, "
              "checksum, installed_by, execution_time, success, status, domain) VALUES "
              "(1, '1', 'a', 'SQL', 'V1__a.sql', 1, 'x', 0, true, 'success', 'other'),"
              "(2, '1', 'a', 'UNDO_SQL', 'U1__a.sql', 1, 'x', 0, true, 'success', 'other'),"
              "(3, NULL, 'v', 'SQL', 'R__v.sql', 1, 'x', 0, true, 'success', 'other'),"
              "(4, NULL, 'v', 'SQL', 'R__v.sql', 2, 'x', 0, true, 'success', 'other')")


def test_two_runs_that_both_bypass_the_lock_still_apply_a_file_once(pg_url, tmp_path):
    """The constraint is the last line of defence: the second commit fails and takes its file with it."""
    import threading

    folder = write(tmp_path / "sql", {
        "V1__counter.sql": "CREATE TABLE counter (id int PRIMARY KEY, n int);\nINSERT INTO counter VALUES (1, 0);\n",
        "V2__bump.sql": "UPDATE counter SET n = n + 1 WHERE pg_sleep(1) IS NOT NULL;\n",
    })
    ms = migrations(folder)
    setup = PostgresAdapter.from_url(pg_url, domain="adhoc")
    first, second = (PostgresAdapter.from_url(pg_url, domain="adhoc") for _ in range(2))
    try:
        migrate(setup, ms[:1], ctx())
        errors: list[Exception] = []

        def apply(adapter):
            try:
                adapter.apply(ms[1], ms[1].text, ctx())  # no lock taken: what a lost lock amounts to
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=apply, args=(x,)) for x in (first, second)]
        for t in threads:
            t.start()
            time.sleep(0.3)
        for t in threads:
            t.join(30)
    finally:
        for x in (setup, first, second):
            x.close()
    assert q(pg_url, "SELECT n FROM counter") == [(1,)]
    assert successes(pg_url) == [("1", 1), ("2", 1)]
    [error] = errors
    assert isinstance(error, TransientError) and "already applied" in str(error)


@pytest.mark.parametrize("header, insert", [("", ""), ("", "INSERT INTO a VALUES (1);\n"),
                                            ("-- polymigrate: transactional=false\n", "")],
                         ids=["transactional", "transactional, reset before the fence", "step by step"])
def test_a_session_that_does_not_hold_the_lock_cannot_commit_a_file(pg_url, tmp_path, header, insert):
    """The fence in the file's own transaction: only the session holding the lock may record a file,
    whether or not the file's session is reset before the fence (a file that may change it is)."""
    folder = write(tmp_path / "sql", {"V1__a.sql": header + "CREATE TABLE a (id int);\n" + insert})
    [m] = migrations(folder)
    holder, intruder = (PostgresAdapter.from_url(pg_url, domain="adhoc") for _ in range(2))
    try:
        with holder.lock("holder@host run=1", 1):
            with pytest.raises(TransientError) as info:
                intruder.apply(m, m.text, ctx())
        assert "lost the migration lock" in str(info.value)
    finally:
        holder.close()
        intruder.close()
    assert q(pg_url, "SELECT to_regclass('a')") == [(None,)]
    assert successes(pg_url) == []


def test_an_older_ledger_with_a_double_success_is_named_and_repair_keeps_the_first(pg_url, tmp_path):
    folder = write(tmp_path / "sql", {"V1__a.sql": "CREATE TABLE a (id int);\n",
                                      "V2__b.sql": "CREATE TABLE b (id int);\n"})
    a = PostgresAdapter.from_url(pg_url, domain="adhoc")
    try:
        migrate(a, migrations(folder)[:1], ctx())
    finally:
        a.close()
    # what a ledger of an earlier version looks like after the lost-lock bug: no index, two successes
    index = q(pg_url, "SELECT indexname FROM pg_indexes WHERE tablename = 'schema_history' AND indexdef LIKE '%%UNIQUE%%' "
                      "AND indexdef LIKE '%%version%%'")
    for (name,) in index or []:
        q(pg_url, f'DROP INDEX polymigrate."{name}"')
    q(pg_url, "INSERT INTO polymigrate.schema_history (installed_rank, version, description, type, script, checksum, "
              "installed_by, execution_time, success, status, domain) SELECT 2, version, description, type, script, "
              "checksum, 'run b', 0, true, 'success', domain FROM polymigrate.schema_history")
    b = PostgresAdapter.from_url(pg_url, domain="adhoc")
    try:
        with pytest.raises(PermanentError) as info:
            migrate(b, migrations(folder), ctx())
        assert "version 1" in str(info.value) and "ranks 1, 2" in str(info.value) and "repair" in str(info.value)
        b.repair(migrations(folder), ctx())
        migrate(b, migrations(folder), ctx())
        assert [(e.installed_rank, e.status) for e in b.read_ledger()] == [
            (1, Status.SUCCESS), (2, Status.DELETED), (3, Status.SUCCESS)]
    finally:
        b.close()
    assert successes(pg_url) == [("1", 1), ("2", 1)]


# -- 4. session state never leaks from one file into the next --------------------------------------------------

@pytest.fixture
def evil_role(pg_url):
    name = f"pm_evil_{uuid.uuid4().hex[:8]}"
    q(pg_url, f"CREATE ROLE {name}")
    yield name
    q(pg_url, f"DROP OWNED BY {name}")
    q(pg_url, f"DROP ROLE {name}")


def test_search_path_and_role_set_by_one_file_do_not_reach_the_next(pg_url, tmp_path, evil_role):
    """Everything a file can leave in its session is gone before the next file: role, search_path, a
    setting, a temporary table, a LISTEN, a prepared statement, a cursor held past the commit."""
    folder = write(tmp_path / "sql", {
        "V1__evil.sql": f"CREATE SCHEMA evil;\nGRANT CREATE, USAGE ON SCHEMA public, evil TO {evil_role};\n"
                        f"SET search_path = evil;\nSET ROLE {evil_role};\nCREATE TEMP TABLE scratch (id int);\n"
                        "LISTEN orders_changed;\nPREPARE p AS SELECT 1;\nDECLARE c CURSOR WITH HOLD FOR SELECT 1;\n"
                        f"SET statement_timeout = '50ms';\n",
        "V2__orders.sql": "CREATE TABLE orders (id int);\nSELECT pg_sleep(0.2);\n"
                          "CREATE TEMP TABLE scratch (id int);\n"  # V1's temp table is gone
                          "PREPARE p AS SELECT 2;\nDECLARE c CURSOR WITH HOLD FOR SELECT 2;\n"  # so are p and c
                          "DO $$BEGIN IF EXISTS (SELECT pg_listening_channels()) THEN RAISE 'still listening'; "
                          "END IF; END$$;\n",
    })
    a = PostgresAdapter.from_url(pg_url, domain="adhoc")
    try:
        migrate(a, migrations(folder), ctx())
    finally:
        a.close()
    # the same tables and owners as two separate runs would give: results never depend on batching
    assert q(pg_url, "SELECT n.nspname, pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n "
                     "ON n.oid = c.relnamespace WHERE c.relname = 'orders'") == [("public", "postgres")]
    assert [r[0] for r in q(pg_url, "SELECT installed_by FROM polymigrate.schema_history")] == ["tester@host"] * 2


def test_a_session_set_by_a_function_call_is_reset_before_a_plain_ddl_file(pg_url, tmp_path):
    """Issue 24: only a file none of whose statements can change the session skips the reset; a
    ``set_config`` call can, so the plain CREATE TABLE after it still lands in ``public``."""
    folder = write(tmp_path / "sql", {
        "V1__path.sql": "CREATE SCHEMA evil;\nSELECT set_config('search_path', 'evil', false);\n",
        "V2__orders.sql": "CREATE TABLE orders (id int);\n",
        "V3__broken.sql": "CREATE TABLE items (id int);\nCREATE TABLE items (id int);\n",
    })
    a = PostgresAdapter.from_url(pg_url, domain="adhoc")
    try:
        with pytest.raises(MigrationError) as info:
            migrate(a, migrations(folder), ctx())
        assert "V3__broken.sql:2" in str(info.value)
        # the failed file's transaction was rolled back: the session still works, V3 left nothing
        assert [e.script for e in a.read_ledger()] == ["V1__path.sql", "V2__orders.sql"]
    finally:
        a.close()
    assert q(pg_url, "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                     "WHERE c.relname IN ('orders', 'items')") == [("public",)]


# -- 5. files Flyway applies: explicit COMMIT, BEGIN … COMMIT, DO blocks that commit ------------------------------

def test_a_mid_file_commit_is_applied_like_flyway_and_resumes_exactly_once(pg_url, tmp_path):
    folder = write(tmp_path / "sql", {
        "V1__load.sql": "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\nCOMMIT;\n"
                        "INSERT INTO a VALUES (2);\nINSERT INTO ${target} VALUES (3);\n",
    })
    failed = subprocess.run(cli(pg_url, folder, "-p", "target=missing"), capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "V1__load.sql:5" in failed.stderr and 'relation "missing"' in failed.stderr
    assert q(pg_url, "SELECT id FROM a") == [(1,)]  # committed by the file itself, as Flyway leaves it
    # statements 1-3 (up to the file's COMMIT) committed with their progress
    assert q(pg_url, "SELECT status, progress->>'statements_done' FROM polymigrate.schema_history") == [("failed", "3")]

    rerun = subprocess.run(cli(pg_url, folder, "-p", "target=a"), capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert "resume" in rerun.stdout
    assert q(pg_url, "SELECT id FROM a ORDER BY id") == [(1,), (2,), (3,)]  # nothing twice, no "already exists"
    [(status, checksum)] = q(pg_url, "SELECT status, checksum FROM polymigrate.schema_history")
    assert status == "success" and checksum == migrations(folder)[0].checksum  # the file as written: Flyway's CRC32


def test_begin_commit_pairs_and_a_do_block_that_commits_are_applied(pg_url, tmp_path):
    folder = write(tmp_path / "sql", {
        "V1__pairs.sql": "CREATE TABLE a (id int);\nBEGIN;\nINSERT INTO a VALUES (1);\nCOMMIT;\n"
                         "START TRANSACTION ISOLATION LEVEL SERIALIZABLE;\nINSERT INTO a SELECT 2 "
                         "WHERE current_setting('transaction_isolation') = 'serializable';\nEND;\n",
        "V2__batches.sql": "CREATE TABLE c (id int);\nDO $$\nBEGIN\n  FOR i IN 1..3 LOOP\n"
                           "    INSERT INTO c VALUES (i);\n    COMMIT;\n  END LOOP;\nEND $$;\n",
    })
    a = PostgresAdapter.from_url(pg_url, domain="adhoc")
    try:
        result = migrate(a, migrations(folder), ctx())
        details = [e.progress for e in a.read_ledger()]
    finally:
        a.close()
    assert [x["script"] for x in result.applied] == ["V1__pairs.sql", "V2__batches.sql"]
    assert q(pg_url, "SELECT id FROM a ORDER BY id") == [(1,), (2,)]
    assert q(pg_url, "SELECT id FROM c ORDER BY id") == [(1,), (2,), (3,)]
    assert details[1]["reasons"] == ["DO block with COMMIT or ROLLBACK"]


def test_rollback_in_a_file_is_refused_naming_the_line(pg_url, tmp_path):
    folder = write(tmp_path / "sql", {"V1__r.sql": "CREATE TABLE a (id int);\nROLLBACK;\n"})
    a = PostgresAdapter.from_url(pg_url, domain="adhoc")
    try:
        with pytest.raises(PermanentError) as info:
            migrate(a, migrations(folder), ctx())
    finally:
        a.close()
    assert "V1__r.sql:2" in str(info.value) and "ROLLBACK" in str(info.value)
    assert q(pg_url, "SELECT to_regclass('a')") == [(None,)]


@pytest.mark.engine("flyway")
@pytest.mark.skipif(not (os.environ.get("POLYMIGRATE_FLYWAY_CP") and shutil.which("java")),
                    reason="Flyway is not installed (scripts/engines.sh up flyway)")
def test_a_database_flyway_migrated_with_a_mid_file_commit_is_adopted_and_checksums_match(pg_url, tmp_path):
    folder = write(tmp_path / "sql", {
        "V1__load.sql": "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\nCOMMIT;\nCREATE TABLE b (id int);\n",
        "V2__pairs.sql": "BEGIN;\nINSERT INTO a VALUES (2);\nCOMMIT;\n",
    })
    jdbc = "jdbc:postgresql://" + pg_url.split("@", 1)[1]
    flyway = subprocess.run(["java", "-cp", os.environ["POLYMIGRATE_FLYWAY_CP"], "FlywayCli", "migrate",
                             f"-url={jdbc}", "-user=postgres", f"-locations=filesystem:{folder}"],
                            capture_output=True, text=True, timeout=120)
    assert flyway.returncode == 0, flyway.stdout + flyway.stderr
    flyway_sums = q(pg_url, "SELECT script, checksum FROM flyway_schema_history ORDER BY installed_rank")

    imported = subprocess.run([*CLI, "flyway-import", "--url", pg_url], capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stderr
    again = subprocess.run(cli(pg_url, folder), capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "0 applied" in again.stdout, again.stdout + again.stderr
    assert [(m.script, m.checksum) for m in migrations(folder)] == flyway_sums


# -- 6. errors: permanent connection problems, idle session timeout, passwords --------------------------------

@pytest.mark.parametrize("mutate, needle", [
    (lambda u: u.rsplit("/", 1)[0] + "/pm_no_such_database", "does not exist"),
    (lambda u: u + "?sslmode=bogus", "sslmode"),
    (lambda u: u + "?sslmode=require", "SSL"),
    (lambda u: u.replace(":54329", ":99999") if ":54329" in u else u + "?port=99999", "port"),
])
def test_a_connection_that_can_never_work_is_permanent(pg_url, mutate, needle):
    a = PostgresAdapter.from_url(mutate(pg_url), domain="adhoc")
    try:
        with pytest.raises(PermanentError) as info:
            a.read_ledger()
    finally:
        a.close()
    assert not isinstance(info.value, TransientError), info.value
    assert needle in str(info.value)


def test_an_idle_session_timeout_is_transient(pg_url):
    a = PostgresAdapter.from_url(pg_url + "?options=-c%20idle_session_timeout%3D300", domain="adhoc")
    try:
        a.read_ledger()
        time.sleep(0.8)
        with pytest.raises(TransientError) as info:
            a.read_ledger()
        assert "57P05" in str(info.value) or "idle" in str(info.value)
    finally:
        a.close()


def test_a_password_in_the_url_query_is_never_printed(pg_url, tmp_path):
    secret = "s3cr3t-" + uuid.uuid4().hex[:8]
    url = f"{pg_url}?password={secret}&application_name=x"
    folder = write(tmp_path / "sql", {"V1__a.sql": "CREATE TABLE a (id int);\n",
                                      "V2__bad.sql": "INSERT INTO missing VALUES (1);\n"})
    run = subprocess.run(cli(url, folder), capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "300"})
    assert run.returncode == 1
    assert secret not in run.stdout + run.stderr
    assert "password=***" in run.stdout + run.stderr  # the target is still recognisable
    status = subprocess.run(cli(url, folder, verb="status"), capture_output=True, text=True, timeout=60)
    assert secret not in status.stdout + status.stderr
    bad = subprocess.run(cli(url.replace("/" + pg_url.rsplit("/", 1)[1], "/pm_missing_db"), folder),
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "does not exist" in bad.stderr and secret not in bad.stdout + bad.stderr
