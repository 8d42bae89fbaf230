"""Faults on the real Redis server (issue 14): a lease holder frozen past its lease wakes up after
another run finished, and must not write the ledger; a run that waits says who holds the lease.

The frozen run is a real CLI process stopped with SIGSTOP (what a paused VM, a long GC or a
swapped-out container does to a process), resumed with SIGCONT.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from polymigrate.adapters.redis.adapter import RedisAdapter
from polymigrate.errors import LockNotAcquired

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-c", "from polymigrate.cli import main; main()"]
TOTAL = 3000
# c:1..c:TOTAL incremented once per cursor step; INCR is deliberately not idempotent, so a counter
# above 1 proves a batch ran twice.
COUNT_ONCE = """-- polymigrate: batch_size=50, pause_ms=30
local start = tonumber(ARGV[1])
if start == 0 then start = 1 end
local last = math.min(start + tonumber(ARGV[2]) - 1, {total})
for i = start, last do redis.call('INCR', 'c:' .. i) end
local nxt = last + 1
if nxt > {total} then nxt = 0 end
return {{tostring(nxt), last - start + 1}}
""".format(total=TOTAL)


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def run(url: str, folder: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "migrate", "--url", url, "--locations", str(folder), "-d", "shop"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_until(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.mark.slow
def test_a_run_frozen_past_its_lease_cannot_overwrite_what_the_next_run_recorded(client, redis_url, tmp_path):
    folder = tmp_path / "redis"
    folder.mkdir()
    (folder / "1-count.lua").write_text(COUNT_ONCE)
    url = redis_url + "?lease_ms=1000"
    ns = "polymigrate:{shop}"

    frozen = run(url, folder)
    try:
        wait_until(lambda: client.hget(f"{ns}:progress", "1") or frozen.poll() is not None, "the first batches")
        os.kill(frozen.pid, signal.SIGSTOP)
        wait_until(lambda: client.get(f"{ns}:lock") is None, "the frozen run's lease to expire", timeout=10)
        second = subprocess.run([*CLI, "migrate", "--url", url, "--locations", str(folder), "-d", "shop"],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 0, second.stderr
        assert "resume" in second.stdout
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        out, err = frozen.communicate(timeout=60)
    assert frozen.returncode == 1 and "transient" in err and "lease" in err, (out, err)

    rows = RedisAdapter.from_url(redis_url, domain="shop").read_ledger()
    assert [(e.version, e.status.value) for e in rows] == [("1", "success")]  # not overwritten as failed
    third = subprocess.run([*CLI, "migrate", "--url", url, "--locations", str(folder), "-d", "shop"],
                           capture_output=True, text=True, timeout=60)
    assert third.returncode == 0 and "0 applied" in third.stdout, third.stdout + third.stderr
    counts = client.mget([f"c:{i}" for i in range(1, TOTAL + 1)])
    assert set(counts) == {b"1"}  # every key processed exactly once across the three runs


def test_a_failure_keeps_the_cursor_and_a_refused_write_keeps_the_other_runs_row(client, redis_url, tmp_path):
    from polymigrate.catalog import discover
    from polymigrate.executor import migrate
    from polymigrate.ledger import RunContext, Status

    folder = tmp_path / "redis"
    folder.mkdir()
    (folder / "1-count.lua").write_text(COUNT_ONCE.replace("for i = start, last do redis.call('INCR'",
                                                           "if redis.call('EXISTS', 'poison') == 1 and start > 1000 "
                                                           "then return redis.error_reply('poisoned') end\n"
                                                           "for i = start, last do redis.call('INCR'"))
    migs = discover("shop", "redis", folder).applicable("redis")
    client.set("poison", 1)
    a = RedisAdapter.from_url(redis_url, domain="shop")
    try:
        with pytest.raises(Exception, match="poisoned"):
            migrate(a, migs, RunContext(domain="shop", actor="a@host"))
        [row] = a.read_ledger()
        assert row.status is Status.FAILED and int(row.progress["cursor"]) > 1000  # the cursor is kept
        client.delete("poison")
        assert migrate(a, migs, RunContext(domain="shop", actor="a@host")).applied[0]["action"] == "resume"
    finally:
        a.close()
    assert set(client.mget([f"c:{i}" for i in range(1, TOTAL + 1)])) == {b"1"}


def test_a_run_that_waits_for_the_lease_says_who_holds_it(redis_url, caplog):
    holder = RedisAdapter.from_url(redis_url, domain="shop", lease_ms=2000)
    waiter = RedisAdapter.from_url(redis_url, domain="shop")
    try:
        with holder.lock("alice@laptop dag=pm_shop_production run=manual__1 try=1", 1):
            with caplog.at_level(logging.INFO, logger="polymigrate"):
                with pytest.raises(LockNotAcquired) as info:
                    with waiter.lock("bob@host", 0.3):
                        pass
    finally:
        holder.close()
        waiter.close()
    waiting = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert waiting and "alice@laptop dag=pm_shop_production run=manual__1 try=1" in waiting[0]
    assert "lease expires in" in waiting[0]
    assert info.value.holder.startswith("alice@laptop")


def test_a_redis_connection_that_can_never_work_is_permanent(redis_url):
    from polymigrate.errors import PermanentError, TransientError

    a = RedisAdapter.from_url(redis_url.rsplit("/", 1)[0] + "/999", domain="shop")  # no such database index
    try:
        with pytest.raises(PermanentError) as info:
            a.read_ledger()
    finally:
        a.close()
    assert not isinstance(info.value, TransientError) and "out of range" in str(info.value)


def cli(url: str, folder: Path, *verb: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *verb, "--url", url, "--locations", str(folder), "-d", "shop"],
                          capture_output=True, text=True, timeout=120)


def test_a_lua_syntax_error_fixed_in_the_file_reruns_with_the_new_text(client, redis_url, tmp_path):
    """Issue 28: nothing of the file ran (the server refused to compile it), so the fixed file runs
    and its row takes the new checksum; no `repair`, no ledger edited by hand."""
    folder = tmp_path / "redis"
    folder.mkdir()
    lua = folder / "1-mark.lua"
    lua.write_text("redis.call('INCR', 'marked'\nreturn 1\n")
    failed = cli(redis_url, folder, "migrate")
    assert failed.returncode != 0 and "nothing ran" in failed.stderr, failed.stdout + failed.stderr
    lua.write_text("redis.call('INCR', 'marked')\nreturn 1\n")
    fixed = cli(redis_url, folder, "migrate")
    assert fixed.returncode == 0 and "1 applied" in fixed.stdout, fixed.stdout + fixed.stderr
    [row] = RedisAdapter.from_url(redis_url, domain="shop").read_ledger()
    from polymigrate.catalog import discover
    assert row.status.value == "success" and row.checksum == discover("shop", "redis", folder).applicable("redis")[0].checksum
    assert client.get("marked") == b"1"
    assert "0 applied" in cli(redis_url, folder, "migrate").stdout


def test_a_file_edited_after_it_failed_half_way_is_refused_saying_what_ran_and_repair_resumes_it(client, redis_url,
                                                                                                 tmp_path):
    """Part of the file committed (batches up to the cursor): the edited file is not rerun from the
    start; the refusal names the keys, batches and cursor and the choices; after `repair` the new text
    resumes from the cursor, and every key is counted once."""
    folder = tmp_path / "redis"
    folder.mkdir()
    lua = folder / "1-count.lua"
    lua.write_text(COUNT_ONCE.replace("for i = start, last do redis.call('INCR'",
                                      "if start > 1000 then return redis.error_reply('poisoned') end\n"
                                      "for i = start, last do redis.call('INCR'"))
    failed = cli(redis_url, folder, "migrate")
    assert failed.returncode != 0 and "poisoned" in failed.stdout + failed.stderr
    lua.write_text(COUNT_ONCE)  # the fix: the check that failed is gone
    refused = cli(redis_url, folder, "migrate")
    out = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "stopped half way" in out and "key(s) in" in out and "cursor" in out, out
    assert "restore the file as it ran" in " ".join(out.split()) and "repair" in out
    repaired = cli(redis_url, folder, "repair")
    assert repaired.returncode == 0 and "realigned 1-count.lua" in repaired.stdout, repaired.stdout + repaired.stderr
    resumed = cli(redis_url, folder, "migrate")
    assert resumed.returncode == 0 and "resume" in resumed.stdout, resumed.stdout + resumed.stderr
    assert set(client.mget([f"c:{i}" for i in range(1, TOTAL + 1)])) == {b"1"}


def test_undo_on_redis_is_refused_with_the_fix_that_exists(client, redis_url, tmp_path):
    """Issue 28 item 6: Redis has no undo files (a U file is ignored), so the refusal says to write a
    new forward migration, not "write the missing undo files (U1__….sql), `repair` first"."""
    from polymigrate.catalog import discover
    from polymigrate.errors import PermanentError
    from polymigrate.executor import migrate, undo_to
    from polymigrate.ledger import RunContext

    folder = tmp_path / "redis"
    folder.mkdir()
    (folder / "1-mark.lua").write_text("redis.call('SET', 'marked', '1')\nreturn 1\n")
    migs = discover("shop", "redis", folder).applicable("redis")
    a = RedisAdapter.from_url(redis_url, domain="shop")
    try:
        migrate(a, migs, RunContext(domain="shop", actor="a@host"))
        with pytest.raises(PermanentError) as info:
            undo_to(a, migs, RunContext(domain="shop", actor="a@host"), "0")
    finally:
        a.close()
    text = str(info.value)
    assert "1-mark.lua" in text and "new forward migration" in text, text
    assert ".sql" not in text and "repair" not in text, text
