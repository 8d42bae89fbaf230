"""Acceptance: exactly-once under kill -9, and two concurrent runs on one target.

Each test runs the real CLI in a subprocess against the real server and kills it with SIGKILL at
a known point, found from pg_stat_activity rather than a sleep, so the kill lands where intended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-c", "from polymigrate.cli import main; main()"]


def q(url: str, sql: str, *params):
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql, params or None)
        return cur.fetchall() if cur.description else None


def cli(*args: str) -> list[str]:
    return [*CLI, *args]


def start(url: str, folder: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(cli("migrate", "--url", url, "--locations", str(folder), *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_query(url: str, needle: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    """Until a session of this database runs a query containing ``needle``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = q(url, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' "
                      "AND query LIKE %s AND pid <> pg_backend_pid()", f"%{needle}%")
        if rows:
            return
        if proc.poll() is not None:
            raise AssertionError(f"CLI exited early ({proc.returncode}): {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"no session ran {needle!r} within {timeout}s")


def wait_gone(url: str, needle: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while q(url, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query LIKE %s "
                 "AND pid <> pg_backend_pid()", f"%{needle}%"):
        assert time.monotonic() < deadline, f"the killed run's session still runs {needle!r}"
        time.sleep(0.05)


def ledger(url: str) -> list[tuple]:
    return q(url, "SELECT version, script, status, success FROM polymigrate.schema_history ORDER BY installed_rank")


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_kill_during_a_transactional_file_then_rerun_applies_each_file_once(pg_url, tmp_path):
    folder = write(tmp_path / "sql", {
        "V1__a.sql": "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n",
        # ${pause} changes the rendered SQL, not the checksum: the rerun does not wait again
        "V2__b.sql": "CREATE TABLE b (id int);\nINSERT INTO b VALUES (1);\nSELECT pg_sleep(${pause});\n"
                     "INSERT INTO b VALUES (2);\nUPDATE a SET id = id + 10;\n",
        "V3__c.sql": "CREATE TABLE c (id int);\n",
    })
    proc = start(pg_url, folder, "-p", "pause=60")
    wait_for_query(pg_url, "pg_sleep", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    wait_gone(pg_url, "pg_sleep")  # the server aborts the orphaned transaction
    assert ledger(pg_url) == [("1", "V1__a.sql", "success", True)]
    assert q(pg_url, "SELECT to_regclass('b')") == [(None,)]

    rerun = subprocess.run(cli("migrate", "--url", pg_url, "--locations", str(folder), "-p", "pause=0"),
                           capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert ledger(pg_url) == [("1", "V1__a.sql", "success", True), ("2", "V2__b.sql", "success", True),
                              ("3", "V3__c.sql", "success", True)]
    assert q(pg_url, "SELECT id FROM b ORDER BY id") == [(1,), (2,)]
    assert q(pg_url, "SELECT id FROM a") == [(11,)]  # V2's update ran exactly once


def test_kill_during_create_index_concurrently_then_rerun_repairs_the_invalid_index(pg_url, tmp_path):
    q(pg_url, "CREATE TABLE events (id int, kind text); INSERT INTO events SELECT g, 'k' || g % 7 "
              "FROM generate_series(1, 20000) g")
    folder = write(tmp_path / "sql", {
        "V1__log.sql": "CREATE TABLE log (n int);\n",
        "V2__idx.sql": "-- polymigrate: lock_timeout=60s\nINSERT INTO log VALUES (1);\n"
                       "CREATE INDEX CONCURRENTLY events_kind ON events (kind);\nINSERT INTO log VALUES (2);\n",
    })
    # An open writing transaction makes the concurrent build wait after it has created the (still
    # INVALID) index: the kill lands in the middle of the build every time.
    with psycopg.connect(pg_url) as writer:
        writer.execute("INSERT INTO events VALUES (0, 'k0')")
        proc = start(pg_url, folder)
        wait_for_query(pg_url, "CREATE INDEX CONCURRENTLY", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_gone(pg_url, "CREATE INDEX CONCURRENTLY")
        writer.commit()
    assert q(pg_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'events_kind'::regclass") == [(False,)]
    [v1, v2] = q(pg_url, "SELECT status, progress->>'statements_done' FROM polymigrate.schema_history "
                         "ORDER BY installed_rank")
    assert v1 == ("success", "1") and v2 == ("started", "1")

    rerun = subprocess.run(cli("migrate", "--url", pg_url, "--locations", str(folder)),
                           capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert "resume" in rerun.stdout
    assert ledger(pg_url) == [("1", "V1__log.sql", "success", True), ("2", "V2__idx.sql", "success", True)]
    assert q(pg_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'events_kind'::regclass") == [(True,)]
    assert q(pg_url, "SELECT n FROM log ORDER BY n") == [(1,), (2,)]  # nothing ran twice
    assert q(pg_url, "SELECT count(*) FROM pg_indexes WHERE tablename = 'events'") == [(1,)]


def wait_for_session(url: str, application_name: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not q(url, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                application_name):
        if proc.poll() is not None:
            raise AssertionError(f"CLI exited early ({proc.returncode}): {proc.communicate()}")
        assert time.monotonic() < deadline, f"no session {application_name!r} within {timeout}s"
        time.sleep(0.05)


@pytest.fixture
def gate(pg_url):
    """A table the test keeps locked: the first run's file waits on it for as long as the test needs,
    however slowly the second process starts on a loaded machine."""
    q(pg_url, "CREATE TABLE gate (id int)")
    with psycopg.connect(pg_url) as holder:
        holder.execute("LOCK TABLE gate IN ACCESS EXCLUSIVE MODE")
        yield holder


def test_two_concurrent_runs_equal_one_run(pg_url, tmp_path, gate):
    folder = write(tmp_path / "sql", {
        "V1__slow.sql": "-- polymigrate: lock_timeout=120s\nCREATE TABLE a (id int);\nSELECT count(*) FROM gate;\n"
                        "INSERT INTO a VALUES (1);\n",
        "V2__b.sql": "INSERT INTO a VALUES (2);\n",
        "R__v.sql": "CREATE OR REPLACE VIEW v AS SELECT count(*) AS n FROM a;\n",
    })
    first = start(pg_url, folder)
    wait_for_query(pg_url, "FROM gate", first)
    second = start(pg_url, folder)
    wait_for_session(pg_url, "polymigrate apply adhoc", second)  # connected: now polling for the lock
    time.sleep(0.5)
    gate.commit()
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    assert "3 applied" in out1 and "0 applied" in out2
    assert "waiting" in err2 and "held by" in err2 and "run=cli-" in err2  # told whom it waited for
    assert [r[:3] for r in ledger(pg_url)] == [("1", "V1__slow.sql", "success"), ("2", "V2__b.sql", "success"),
                                               (None, "R__v.sql", "success")]
    assert q(pg_url, "SELECT id FROM a ORDER BY id") == [(1,), (2,)]


def test_a_run_that_cannot_wait_fails_fast_naming_the_holder(pg_url, tmp_path, gate):
    folder = write(tmp_path / "sql", {"V1__slow.sql": "-- polymigrate: lock_timeout=120s\nSELECT count(*) FROM gate;\n"})
    first = start(pg_url, folder)
    wait_for_query(pg_url, "FROM gate", first)
    second = subprocess.run(cli("migrate", "--url", pg_url, "--locations", str(folder), "--lock-wait", "0"),
                            capture_output=True, text=True, timeout=60)
    gate.commit()
    first.communicate(timeout=60)
    assert second.returncode == 1
    assert "held by" in second.stderr and "run=cli-" in second.stderr and "safe to retry" in second.stderr
    assert [r[:3] for r in ledger(pg_url)] == [("1", "V1__slow.sql", "success")]
