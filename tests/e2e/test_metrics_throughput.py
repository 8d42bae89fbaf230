"""Issue 23.2: a backfill's rows per second, a batched Redis script's keys per second and its longest
call reach a StatsD server with their tags, from a real ``dag.test()`` run on PostgreSQL and Redis."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REDIS_URL
from tests.e2e.harness import lines_of, write

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def test_backfill_and_batched_script_throughput_and_longest_call(tmp_path, make_pg_database, redis_url, monkeypatch,
                                                                  airflow_db, statsd):
    import redis

    from polymigrate_airflow.renderer import build_dags

    specs = tmp_path / "specs"
    write(specs / "environments/staging.yaml", """\
        regions: {r1: null}
        policy: {approvals: {required: 0}, retries: 0, lock_wait_seconds: 5}
        """)
    write(specs / "shop/domain.yaml", "technologies: {postgresql: {}, redis: {key_prefix: 'shop:'}}\n")
    write(specs / "shop/postgresql/V1__orders.sql", """\
        CREATE TABLE orders (id bigint PRIMARY KEY, total numeric);
        INSERT INTO orders SELECT g, NULL FROM generate_series(1, 3000) g;
        """)
    write(specs / "shop/postgresql/V2__backfill_total.sql", """\
        -- polymigrate: backfill=true, batch_size=500
        UPDATE orders SET total = 0 WHERE total IS NULL;
        """)
    write(specs / "shop/redis/1-session-ttl.lua", """\
        -- polymigrate: batch_size=50
        local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3] .. 'session:*', 'COUNT', tonumber(ARGV[2]))
        local n = 0
        for _, key in ipairs(res[2]) do
          if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, 3600); n = n + 1 end
        end
        return {res[1], n}
        """)
    rd = redis.Redis.from_url(redis_url)
    rd.mset({f"shop:session:{i}": "x" for i in range(200)})
    host, _, port = REDIS_URL.removeprefix("redis://").partition(":")
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_STAGING_R1", make_pg_database("pm_e2e23_rate"))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_REDIS_STAGING_R1", json.dumps(
        {"conn_type": "redis", "host": host, "port": int(port or 6379), "extra": {"db": int(redis_url.rsplit("/", 1)[1])}}))

    dr = build_dags(specs)["migrate__shop__staging"].test()
    assert dr.state == "success"
    received = statsd()
    where = {"domain": "shop", "environment": "staging", "region": "r1", "phase": "all"}
    rates = {tags["operation"]: (tags, value) for tags, value in lines_of(received, "polymigrate.migration.throughput")}
    assert sorted(rates) == ["backfill", "batched_script"], received
    assert rates["backfill"][0] == {**where, "technology": "postgresql", "operation": "backfill"}
    assert rates["batched_script"][0] == {**where, "technology": "redis", "operation": "batched_script"}
    assert all(float(v.split("|")[0]) > 0 and v.endswith("|g") for _, v in rates.values())
    (tags, value), = lines_of(received, "polymigrate.redis.longest_call")
    assert tags == where and value.endswith("|ms")
    assert rd.ttl("shop:session:7") > 0
    rd.close()
