"""The Redis adapter on a real three-primary Redis Cluster it starts on free ports."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import pytest
from redis.cluster import RedisCluster, key_slot

from polymigrate.adapters.redis.adapter import RedisAdapter
from polymigrate.catalog import discover
from polymigrate.errors import PermanentError
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext, Status
from polymigrate.spec.models import TechnologyConfig
from tests.conftest import engine_tool

pytestmark = [pytest.mark.integration, pytest.mark.engine("redis")]
ROOT = Path(__file__).resolve().parents[3]


def _free_ports(n: int) -> list[int]:
    """Ports free for a node and its cluster bus (port + 10000, so below 55536)."""
    ports: list[int] = []
    for port in range(random.randrange(20000, 40000), 45000):
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError("no free ports for a test cluster")


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    server = engine_tool("redis", names=("redis-server",))
    cli = engine_tool("redis", names=("redis-cli",))
    ports = _free_ports(3)
    procs = []
    for port in ports:
        d = base / str(port)
        d.mkdir()
        procs.append(subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
             "--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no", "--dir", str(d)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        time.sleep(0.3)
        subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        client = RedisCluster(host="127.0.0.1", port=ports[0])
        for _ in range(100):
            if client.cluster_info().get("cluster_state") == "ok":
                break
            time.sleep(0.1)
        client.close()
        yield f"redis://127.0.0.1:{ports[0]}?cluster=true"
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


@pytest.fixture
def cluster(cluster_url):
    client = RedisCluster.from_url(cluster_url.split("?")[0])
    for node in client.get_primaries():
        client.flushall(target_nodes=node)
    yield client
    client.close()


def _migs(tmp_path: Path, files: dict[str, str]):
    folder = tmp_path / "redis"
    folder.mkdir()
    for name, body in files.items():
        (folder / name).write_text(body, encoding="utf-8")
    return discover("social-commerce", "redis", folder).applicable("redis")


def _ctx() -> RunContext:
    return RunContext(domain="social-commerce", actor="tester@host", run_id="run-1")


def test_scan_migrations_run_on_every_primary_with_a_cursor_each(cluster, cluster_url, tmp_path):
    for i in range(3000):
        cluster.set(f"social:user:{{{i}}}:profile", i)  # the hash tag keeps old and new name in one slot
    migs = _migs(tmp_path, {p.name: p.read_text() for p in (ROOT / "migration_specs/social-commerce/redis").glob("*.lua")})
    a = RedisAdapter.from_url(cluster_url, domain="social-commerce", settings=TechnologyConfig(key_prefix="social:"))
    try:
        migrate(a, migs, _ctx())
        assert migrate(a, migs, _ctx()).applied == []
        row = a.read_ledger()[0]
        assert row.status is Status.SUCCESS and row.progress["processed"] == 3000
        assert len(row.progress["shards"]) == 3 and all(s["done"] for s in row.progress["shards"].values())
    finally:
        a.close()
    assert not list(cluster.scan_iter(match="social:user:*:profile"))
    assert cluster.get("social:user_profile:{2999}") == b"2999"


def test_declared_keys_in_one_slot_run_on_their_node(cluster, cluster_url, tmp_path):
    body = "-- keys: cart:{42}:items, cart:{42}:total\nredis.call('SET', KEYS[2], #KEYS)\nreturn 'OK'\n"
    a = RedisAdapter.from_url(cluster_url, domain="social-commerce")
    try:
        migrate(a, _migs(tmp_path, {"1-cart.lua": body}), _ctx())
    finally:
        a.close()
    assert cluster.get("cart:{42}:total") == b"2"


def test_declared_keys_crossing_slots_are_refused_before_anything_runs(cluster, cluster_url, tmp_path):
    assert key_slot(b"cart:42:items") != key_slot(b"cart:42:total")
    body = "-- keys: cart:42:items, cart:42:total\nredis.call('SET', KEYS[2], 1)\nreturn 'OK'\n"
    a = RedisAdapter.from_url(cluster_url, domain="social-commerce")
    try:
        with pytest.raises(PermanentError) as info:
            migrate(a, _migs(tmp_path, {"1-cart.lua": body}), _ctx())
        assert "1-cart.lua" in str(info.value) and "cross hash slots" in str(info.value)
        assert a.read_ledger() == []
    finally:
        a.close()
    assert cluster.get("cart:42:total") is None


def test_a_rename_across_slots_names_the_line_of_the_template(cluster, cluster_url, tmp_path):
    for i in range(50):
        cluster.set(f"user:{i}:profile", i)  # no hash tag: the new name lands in another slot
    migs = _migs(tmp_path, {"1-rename.lua": (ROOT / "include/polymigrate/templates/redis/rename-keys.lua").read_text()})
    a = RedisAdapter.from_url(cluster_url, domain="social-commerce")
    try:
        with pytest.raises(PermanentError) as info:
            migrate(a, migs, _ctx())
        assert "non local key" in str(info.value) and "RENAMENX" in str(info.value)
        assert a.read_ledger()[0].status is Status.FAILED
    finally:
        a.close()
