"""Acceptance on a real server: kill -9 during a reindex, a lost reindex task, and a holder frozen
(SIGSTOP) past its lease while another run takes over.

The CLI runs in a subprocess and is stopped at a point read from the ledger (the reindex task id
it recorded), not after a sleep. The suite copies 20,000 documents; bench/bench_es_blue_green.py
does the same with 1,000,000 (about 2.5 minutes of reindex alone on the test server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polymigrate.adapters.elasticsearch.api import SearchError
from polymigrate.executor import migrate
from polymigrate.ledger import Status

from tests.integration.adapters.es_helpers import PRODUCTS_V2, adapter, ctx, migrations, seed, step_file

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-c", "from polymigrate.cli import main; main()"]
N = 20_000


def start(t, folder: Path, lease_ms: int = 2000) -> subprocess.Popen:
    url = f"{t.url}?lease_ms={lease_ms}&poll_seconds=0.2"
    return subprocess.Popen([*CLI, "migrate", "--url", url, "--locations", str(folder), "-d", "shop",
                             "--table", t.ledger], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def row(t) -> dict | None:
    try:
        return t.api.get_doc(t.ledger, "r1")
    except SearchError as exc:  # the run may be creating the ledger index right now
        if exc.transient or exc.status == 404:
            return None
        raise


def wait_for_task(t, proc: subprocess.Popen, timeout: float = 60) -> str:
    """Until the run has recorded its reindex task and the task has copied something."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = row(t)
        task = (((doc or {}).get("_source") or {}).get("progress") or {}).get("step_state", {}).get("task")
        if task:
            status = ((t.api.task(task) or {}).get("task") or {}).get("status") or {}
            if int(status.get("created") or 0) > 0:
                return task
        if proc.poll() is not None:
            raise AssertionError(f"the CLI exited early ({proc.returncode}): {proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError("no reindex task recorded in the ledger in time")


def files(alias: str, rps: float) -> dict[str, str]:
    return {"1-products-v2.json": step_file({"blue_green": {
        "alias": alias, "body": {"settings": {"number_of_shards": 1}, "mappings": PRODUCTS_V2},
        "catch_up": "none", "requests_per_second": rps}})}


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_kill_9_during_the_reindex_then_rerun_reattaches_and_ends_on_a_complete_index(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, N)
    folder = tmp_path / "es"
    migrations(folder, files(alias, N / 8))  # about 8 s of copying
    proc = start(t, folder)
    task = wait_for_task(t, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    assert list(t.api.alias_targets(alias)) == [f"{alias}_v1"]  # never on the half-built index
    assert not (t.api.task(task) or {}).get("completed")       # the server still copies

    code, out, err = finish(start(t, folder))
    assert code == 0, err
    assert f"re-attaching to copy {alias}_v1 → {alias}_v2 task {task}" in err
    assert t.api.alias_targets(alias) == {f"{alias}_v2": {"is_write_index": True}}
    assert t.api.count(alias) == N and t.api.count(f"{alias}_v2") == N   # every document, once
    assert not t.api.exists(f"{alias}_v3")
    entries = adapter(t).read_ledger()
    assert [(e.script, e.status) for e in entries] == [("1-products-v2.json", Status.SUCCESS)]


def test_a_reindex_task_the_server_lost_restarts_into_a_fresh_index(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, N // 4)
    folder = tmp_path / "es"
    migrations(folder, files(alias, N / 20))
    proc = start(t, folder)
    task = wait_for_task(t, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t.api.cancel_task(task)  # as when the node running it restarts
    while not (t.api.task(task) or {"completed": True}).get("completed"):
        time.sleep(0.1)

    code, out, err = finish(start(t, folder))
    assert code == 0, err
    assert "restarting into a fresh index" in err
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v3"]
    assert not t.api.exists(f"{alias}_v2")                    # the half-built one is gone
    assert t.api.count(alias) == N // 4


def test_a_holder_frozen_past_its_lease_writes_nothing_after_another_run_took_over(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 5000)
    folder = tmp_path / "es"
    migs = migrations(folder, files(alias, 800))  # about 6 s of copying
    stale = start(t, folder, lease_ms=1500)
    task = wait_for_task(t, stale)
    os.kill(stale.pid, signal.SIGSTOP)
    try:
        taken_at = time.monotonic()
        b = adapter(t, lease_ms=1500)
        try:
            result = migrate(b, migs, ctx(run_id="run-b"))
        finally:
            b.close()
        assert time.monotonic() - taken_at >= 1.5                # it waited for the lease to lapse
        assert [a["action"] for a in result.applied] == ["resume"]
        done = row(t)
        assert done["_source"]["progress"]["switches"][0]["to"] == f"{alias}_v2"
        indices = sorted(t.api.indices(f"{alias}*"))
    finally:
        os.kill(stale.pid, signal.SIGCONT)
    code, out, err = finish(stale)
    assert code == 1 and "taken over by another run" in err, err
    after = row(t)
    assert (after["_seq_no"], after["_source"]) == (done["_seq_no"], done["_source"])  # not one more write
    assert t.api.get_doc(t.ledger, "lock") is None             # nor a lock written or deleted
    assert sorted(t.api.indices(f"{alias}*")) == indices
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v2"] and t.api.count(alias) == 5000
    assert (t.api.task(task) or {}).get("completed")
