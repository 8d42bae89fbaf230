"""Backfills on the real server: keyset batches, exactly once across kill -9 and a frozen run that
lost its lock, pauses while others wait on locks, clear errors naming the file.

The update is ``n = n + 1`` on purpose: running any row's batch twice shows as n = 2.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from tests.integration.adapters.test_postgres_crash import cli, q, start, write

pytestmark = [pytest.mark.integration]

ROWS = 3000
# An uncorrelated sub-select runs once per statement: each batch takes >= 40 ms, so a run lasts long
# enough to be killed in the middle, whatever the machine.
SLOW = "-- polymigrate: backfill=true, batch_size=50, max_batch=50\n" \
       "UPDATE items SET n = n + 1 + (SELECT 0 FROM pg_sleep(0.04)) WHERE kind <> 'skip';\n"


def make_items(url: str, rows: int = ROWS) -> None:
    q(url, "CREATE TABLE items (id bigint PRIMARY KEY, kind text NOT NULL, n int NOT NULL DEFAULT 0); "
           f"INSERT INTO items SELECT g, CASE WHEN g % 10 = 0 THEN 'skip' ELSE 'k' END, 0 FROM generate_series(1, {rows}) g")


def progress(url: str) -> dict:
    if q(url, "SELECT to_regclass('polymigrate.schema_history')") == [(None,)]:
        return {}
    rows = q(url, "SELECT progress->'backfill' FROM polymigrate.schema_history WHERE version = '2'")
    return (rows[0][0] or {}) if rows else {}


def wait_batches(url: str, proc: subprocess.Popen, at_least: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        p = progress(url)
        if int(p.get("batches", 0)) >= at_least:
            return p
        if proc.poll() is not None:
            raise AssertionError(f"CLI exited early ({proc.returncode}): {proc.communicate()}")
        assert time.monotonic() < deadline, f"fewer than {at_least} batches within {timeout}s: {p}"
        time.sleep(0.02)


def counts(url: str) -> dict[tuple[str, int], int]:
    return {(k, n): c for k, n, c in q(url, "SELECT kind, n, count(*) FROM items GROUP BY 1, 2")}


def run(url: str, folder: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli("migrate", "--url", url, "--locations", str(folder), *extra),
                          capture_output=True, text=True, timeout=180)


def test_backfill_runs_in_batches_checkpointed_in_the_ledger(pg_url, tmp_path):
    make_items(pg_url)
    folder = write(tmp_path / "sql", {
        "V1__expand.sql": "ALTER TABLE items ADD COLUMN label text;\n",
        "V2__backfill.sql": "-- polymigrate: backfill=true, batch_size=100, batch_time=20ms\n"
                            "UPDATE items SET n = n + 1, label = kind || '-' || id WHERE kind LIKE 'k%';\n",
    })
    done = run(pg_url, folder)
    assert done.returncode == 0, done.stderr
    assert counts(pg_url) == {("k", 1): ROWS * 9 // 10, ("skip", 0): ROWS // 10}
    assert q(pg_url, "SELECT label FROM items WHERE id = 7") == [("k-7",)]
    p = progress(pg_url)
    assert p["done"] is True and p["key"] == "id" and p["last_key"] == ROWS
    assert p["scanned"] == ROWS and p["updated"] == ROWS * 9 // 10 and p["batches"] > 1
    assert q(pg_url, "SELECT status FROM polymigrate.schema_history ORDER BY installed_rank") == [("success",), ("success",)]
    assert "backfill items done" in done.stderr
    # a second run finds it applied and changes nothing
    again = run(pg_url, folder)
    assert again.returncode == 0, again.stderr
    assert counts(pg_url)[("k", 1)] == ROWS * 9 // 10


def test_kill_9_mid_backfill_then_resume_updates_every_row_exactly_once(pg_url, tmp_path):
    make_items(pg_url)
    folder = write(tmp_path / "sql", {"V1__noop.sql": "SELECT 1;\n", "V2__backfill.sql": SLOW})
    proc = start(pg_url, folder)
    wait_batches(pg_url, proc, 5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    time.sleep(0.3)  # the server notices the dead client and rolls back the open batch
    p = progress(pg_url)
    assert p.get("done") is None and 5 <= p["batches"] < ROWS // 50
    c = counts(pg_url)
    # what committed is exactly what the checkpoint says: the checkpoint and its batch are one transaction
    assert c.get(("k", 1), 0) == p["updated"] and set(c) <= {("k", 0), ("k", 1), ("skip", 0)}
    assert q(pg_url, "SELECT max(id) FROM items WHERE n = 1") == [(p["last_key"] - (p["last_key"] % 10 == 0),)]

    rerun = run(pg_url, folder)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resumes after id = {p['last_key']}" in rerun.stderr
    assert counts(pg_url) == {("k", 1): ROWS * 9 // 10, ("skip", 0): ROWS // 10}
    final = progress(pg_url)
    assert final["done"] and final["scanned"] == ROWS and final["updated"] == ROWS * 9 // 10


def test_a_frozen_run_that_lost_its_lock_cannot_apply_a_batch_twice(pg_url, tmp_path):
    make_items(pg_url)
    folder = write(tmp_path / "sql", {"V1__noop.sql": "SELECT 1;\n", "V2__backfill.sql": SLOW})
    frozen = start(pg_url, folder)
    try:
        wait_batches(pg_url, frozen, 3)
        os.kill(frozen.pid, signal.SIGSTOP)
        # its session is cut while it sleeps (a proxy, idle_session_timeout, an operator): the lock goes with it
        pids = q(pg_url, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                         "AND application_name LIKE 'polymigrate lock:%'")
        assert len(pids) == 1
        q(pg_url, "SELECT pg_terminate_backend(%s)", pids[0][0])
        taker = run(pg_url, folder)
        assert taker.returncode == 0, taker.stderr
        assert counts(pg_url) == {("k", 1): ROWS * 9 // 10, ("skip", 0): ROWS // 10}
        os.kill(frozen.pid, signal.SIGCONT)
        out, err = frozen.communicate(timeout=60)
    finally:
        if frozen.poll() is None:
            os.kill(frozen.pid, signal.SIGCONT)
            frozen.kill()
    assert frozen.returncode != 0
    assert "lost the migration lock" in err
    assert counts(pg_url) == {("k", 1): ROWS * 9 // 10, ("skip", 0): ROWS // 10}  # nothing applied twice
    assert q(pg_url, "SELECT status FROM polymigrate.schema_history WHERE version = '2'") == [("success",)]


def test_a_session_that_dropped_its_lock_commits_no_further_batch(pg_url, tmp_path):
    """Every batch's transaction proves the lock (the fence): here the SET expression itself drops the
    session's advisory locks, another session takes the lock, and the next batch is refused."""
    from polymigrate.adapters.postgresql.adapter import _lock_key
    make_items(pg_url, 2000)
    folder = write(tmp_path / "sql", {"V1__noop.sql": "SELECT 1;\n", "V2__backfill.sql":
        "-- polymigrate: backfill=true, batch_size=50, max_batch=50\n"
        "UPDATE items SET n = n + 1 + (SELECT 0 FROM (SELECT pg_advisory_unlock_all(), pg_sleep(0.03)) x);\n"})
    proc = start(pg_url, folder)
    wait_batches(pg_url, proc, 1)
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (_lock_key("polymigrate:polymigrate.schema_history:adhoc"),))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "lost the migration lock" in err
    p = progress(pg_url)
    assert p["batches"] < 40
    assert q(pg_url, "SELECT count(*) FROM items WHERE n = 1") == [(p["updated"],)]
    assert q(pg_url, "SELECT count(*) FROM items WHERE n > 1") == [(0,)]


def test_backfill_pauses_while_sessions_wait_on_locks(pg_url, tmp_path):
    make_items(pg_url, 500)
    q(pg_url, "CREATE TABLE other (x int)")
    folder = write(tmp_path / "sql", {"V1__noop.sql": "SELECT 1;\n", "V2__backfill.sql":
        "-- polymigrate: backfill=true, batch_size=100, max_batch=100, pause_ms=50\n"
        "UPDATE items SET n = n + 1;\n"})
    holder = psycopg.connect(pg_url)
    holder.execute("LOCK TABLE other IN ACCESS EXCLUSIVE MODE")
    waiter_done = threading.Event()

    def waiter():
        with psycopg.connect(pg_url, autocommit=True) as c:
            c.execute("SELECT count(*) FROM other")
        waiter_done.set()

    t = threading.Thread(target=waiter, daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while not q(pg_url, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc = start(pg_url, folder)
        wait_batches(pg_url, proc, 1)
        time.sleep(1.5)
        assert progress(pg_url)["batches"] == 1 and proc.poll() is None  # paused after its first batch
    finally:
        holder.rollback()
        holder.close()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "backfill paused: 1 session(s) waiting on locks" in err
    assert q(pg_url, "SELECT count(*) FROM items WHERE n = 1") == [(500,)]
    t.join(5)


@pytest.mark.parametrize("header,update,message", [
    ("backfill=true", "UPDATE nosuch SET n = 1;", "backfill table nosuch does not exist"),
    ("backfill=true, key=nope", "UPDATE items SET n = 1;", "backfill key column 'nope' does not exist in items"),
    ("backfill=true, key=kind", "UPDATE items SET n = 1;", "has no b-tree index leading with it"),
    ("backfill=true, key=note", "UPDATE items SET n = 1;", "may be NULL"),
])
def test_a_bad_table_or_key_is_refused_naming_the_file(pg_url, tmp_path, header, update, message):
    make_items(pg_url, 10)
    q(pg_url, "ALTER TABLE items ADD COLUMN note text; CREATE INDEX ON items (note)")
    folder = write(tmp_path / "sql", {"V1__noop.sql": "SELECT 1;\n",
                                      "V2__backfill.sql": f"-- polymigrate: {header}\n{update}\n"})
    done = run(pg_url, folder)
    assert done.returncode == 1
    assert "V2__backfill.sql" in done.stderr and message in done.stderr, done.stderr
    assert "fix:" in done.stderr
    assert q(pg_url, "SELECT count(*) FROM items WHERE n <> 0") == [(0,)]


def test_a_table_without_a_primary_key_needs_key(pg_url, tmp_path):
    q(pg_url, "CREATE TABLE loose (id int NOT NULL, n int NOT NULL DEFAULT 0); INSERT INTO loose SELECT g, 0 FROM "
              "generate_series(1, 100) g")
    folder = write(tmp_path / "sql", {"V1__b.sql": "-- polymigrate: backfill=true\nUPDATE loose SET n = n + 1;\n"})
    done = run(pg_url, folder)
    assert done.returncode == 1 and "V1__b.sql" in done.stderr and "no one-column primary key" in done.stderr
