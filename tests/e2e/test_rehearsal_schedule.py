"""Nightly rehearsals in a real ``airflow standalone``: scheduled environments start unpaused,
never fire a surprise run, and a scheduled run (default params, nobody choosing anything) never
fails on a technology or region the environment does not serve: the plan says what it skipped.

Two environments of one domain (PostgreSQL, Redis, MongoDB files):
- ``staging``: nightly at a time twelve hours from now. Created unpaused; no run may start.
- ``ci``: every minute, so the test sees a real scheduled run. It serves PostgreSQL and Redis only
  (no MongoDB), and its region ``r2`` has no Redis.
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.e2e.harness import People, Standalone

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

PASSWORD = "rehearsal-e2e-pass"
NIGHTLY, EVERY_MINUTE = "migrate__shop__staging", "migrate__shop__ci"
REDIS_DB = 27  # this test's own DB number on the test Redis


def write_specs(root: Path, nightly: str) -> None:
    def env(name: str, schedule: str) -> None:
        (root / "environments" / f"{name}.yaml").write_text(textwrap.dedent(f"""\
            regions:
              r1: {{}}
              r2: {{technologies: [postgresql]}}
            technologies: [postgresql, redis]
            policy:
              approvals: {{required: 0}}
              rollout: {{strategy: sequential}}
              schedule: "{schedule}"
              retries: 0
              lock_wait_seconds: 5
            """))

    (root / "environments").mkdir(parents=True)
    env("staging", nightly)
    env("ci", "* * * * *")
    shop = root / "shop"
    for d in ("postgresql", "redis", "mongodb"):
        (shop / d).mkdir(parents=True)
    (shop / "domain.yaml").write_text("technologies: {postgresql: {}, redis: {key_prefix: 'shop:'}, mongodb: {}}\n")
    (shop / "postgresql" / "V1__orders.sql").write_text("CREATE TABLE orders (id bigint PRIMARY KEY);\n")
    (shop / "redis" / "1-flag.lua").write_text("redis.call('SET', ARGV[3] .. 'flag', '1')\nreturn {'0', 1}\n")
    (shop / "mongodb" / "1-posts.json").write_text('{"commands": [{"create": "posts"}]}\n')


@pytest.fixture
def airflow(tmp_path, make_pg_database):
    nightly_at = datetime.now(timezone.utc) + timedelta(hours=12)
    specs = tmp_path / "specs"
    write_specs(specs, f"{nightly_at.minute} {nightly_at.hour} * * *")
    dbs = {f"{env}_{r}": make_pg_database(f"pm_sched_{env}_{r}") for env in ("staging", "ci") for r in ("r1", "r2")}
    audit = make_pg_database("pm_sched_audit")
    cache = redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}")
    cache.flushdb()
    conns = {f"AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_{k.upper()}": v for k, v in dbs.items()}
    host, port = REDIS_URL.split("//")[1].split(":")
    conns.update({f"AIRFLOW_CONN_POLYMIGRATE_REDIS_{env.upper()}_R1": json.dumps(  # Airflow reads a URI's /N as schema, not db
        {"conn_type": "redis", "host": host, "port": int(port), "extra": {"db": REDIS_DB}}) for env in ("staging", "ci")})
    try:
        with Standalone(tmp_path, metadata=make_pg_database("pm_sched_airflow"), users={"admin": PASSWORD},
                        extra={"POLYMIGRATE_SPECS": str(specs), "AIRFLOW_CONN_POLYMIGRATE_AUDIT": audit, **conns}
                        ) as standalone:
            api = People(standalone.base, standalone.users, standalone.log, proc=standalone.proc, interval=2)
            api.default_timeout = 300
            api.dbs, api.cache = dbs, cache
            yield api
    finally:
        cache.flushdb()


def failed_logs(api, dag: str, run_id: str, states: dict[str, str]) -> str:
    out = []
    for task, state in states.items():
        if state == "failed":
            r = api.call(api.reader, "GET", f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances/{task}/logs/1?full_content=true")
            out.append(f"--- {task}: {r.text[-3000:]}")
    return "\n".join(out)


def test_nightly_rehearsal_starts_unpaused_without_a_surprise_run_and_a_scheduled_run_skips_what_is_not_served(airflow):
    api = airflow
    for dag in (NIGHTLY, EVERY_MINUTE):
        api.wait_parsed(dag)
    nightly = api.get_json(f"/api/v2/dags/{NIGHTLY}")
    assert nightly["is_paused"] is False  # nobody unpaused it: the policy did
    next_run = datetime.fromisoformat(nightly["next_dagrun_run_after"])
    assert next_run > datetime.now(timezone.utc) + timedelta(hours=11), next_run  # tonight, not now

    # The every-minute DAG gets its scheduled run with the default params: nobody chose anything.
    # (A run the scheduler starts in standalone's first seconds can fail before the API server
    # listens, an Airflow startup race unrelated to the DAG: the next minute's run is the one judged.)
    def scheduled_run():
        runs = api.get_json(f"/api/v2/dags/{EVERY_MINUTE}/dagRuns?run_type=scheduled&order_by=logical_date")["dag_runs"]
        ok = [r for r in runs if r["state"] == "success"]
        failed = [r for r in runs if r["state"] == "failed"]
        return (ok or failed[2:] or [None])[0]

    run = api.wait("a scheduled run to succeed", scheduled_run, 420)
    tis = {t["task_id"]: t["state"] for t in
           api.get_json(f"/api/v2/dags/{EVERY_MINUTE}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]}
    assert run["state"] == "success", (tis, failed_logs(api, EVERY_MINUTE, run["dag_run_id"], tis))
    assert "r2.redis" not in tis and tis["r1.redis"] == "success"  # r2 has no Redis: no task at all
    assert not [t for t in tis if t.endswith(".mongodb")]  # ci serves no MongoDB
    plan = api.get_json(f"/api/v2/dags/{EVERY_MINUTE}/dagRuns/{run['dag_run_id']}/taskInstances/plan/xcomEntries/return_value")["value"]
    assert sorted(plan["targets"]) == ["r1/postgresql", "r1/redis", "r2/postgresql"]
    assert any(line.startswith("mongodb: ci does not serve mongodb") for line in plan["skipped"]), plan["skipped"]
    assert any(line.startswith("redis in r2: region r2 of ci does not serve redis") for line in plan["skipped"])
    for region in ("r1", "r2"):
        with psycopg.connect(api.dbs[f"ci_{region}"]) as conn:
            assert conn.execute("SELECT to_regclass('orders') IS NOT NULL").fetchone()[0]
    assert api.cache.get("shop:flag") == b"1"

    # A whole scheduler cycle later the nightly DAG still has no run.
    assert api.get_json(f"/api/v2/dags/{NIGHTLY}/dagRuns")["total_entries"] == 0
