"""Issue 23.3: every execute task reports the datasets it changed through the OpenLineage provider.

One domain on all four real engines (PostgreSQL, FerretDB, OpenSearch, Redis), one ``dag.test()``
run with the provider's file transport configured the way a user turns lineage on
(``AIRFLOW__OPENLINEAGE__TRANSPORT``). The run happens in a child process: the provider decides at
plugin load whether its listener exists, and the other e2e tests of this session run with lineage off.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import REDIS_URL
from tests.e2e.harness import write

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


RUN = """
import sys
from polymigrate_airflow.renderer import build_dags
dr = build_dags(sys.argv[1])["migrate__shop__staging"].test()
print("STATE", dr.state)
"""


def run_dag(specs: Path, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", RUN, str(specs)], cwd=ROOT,
                          env={**os.environ, "POLYMIGRATE_SPECS": str(specs), **env},
                          capture_output=True, text=True, timeout=540)
    states = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("STATE ")]
    assert states, proc.stdout[-3000:] + proc.stderr[-6000:]
    return states[0]


def outputs(events_file: Path) -> dict[str, dict]:
    """The output datasets of every COMPLETE event of an execute task, by the task's job name."""
    out: dict[str, dict] = {}
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        if event.get("eventType") == "COMPLETE" and event["job"]["name"].endswith(
                ("postgresql", "mongodb", "redis", "elasticsearch")):
            out[event["job"]["name"].rsplit(".", 1)[-1]] = event
    return out


def test_execute_tasks_report_the_datasets_they_changed(tmp_path, airflow_db, make_pg_database, make_mongo_database,
                                                        opensearch_target, redis_url):
    import redis

    prefix = opensearch_target.prefix
    specs = tmp_path / "specs"
    write(specs / "environments/staging.yaml", """\
        regions: {r1: null}
        policy: {approvals: {required: 0}, retries: 0, lock_wait_seconds: 10}
        """)
    write(specs / "shop/domain.yaml", f"""\
        technologies:
          postgresql: {{}}
          mongodb: {{}}
          redis: {{key_prefix: "shop:"}}
          elasticsearch: {{ledger: "{opensearch_target.ledger}", index_prefix: "{prefix}"}}
        """)
    write(specs / "shop/postgresql/V1__orders.sql", "CREATE TABLE orders (id bigint PRIMARY KEY);\n")
    write(specs / "shop/postgresql/V2__orders_total.sql", "ALTER TABLE orders ADD COLUMN total numeric(12,2);\n")
    write(specs / "shop/mongodb/1-create-events.json", json.dumps({"commands": [
        {"create": "events"}, {"createIndexes": "events", "indexes": [{"key": {"at": 1}, "name": "at_1"}]}]}))
    write(specs / "shop/elasticsearch/1-create-people.json", json.dumps({"steps": [{"create_index": {
        "index": f"{prefix}people_v1",
        "body": {"mappings": {"properties": {"handle": {"type": "keyword"}}}, "aliases": {f"{prefix}people": {}}}}}]}))
    write(specs / "shop/redis/1-session-ttl.lua", """\
        -- polymigrate: batch_size=100
        local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3] .. 'session:*', 'COUNT', tonumber(ARGV[2]))
        for _, key in ipairs(res[2]) do
          if redis.call('TTL', key) == -1 then redis.call('EXPIRE', key, 3600) end
        end
        return {res[1], 0}
        """)
    rd = redis.Redis.from_url(redis_url)
    rd.set("shop:session:1", "x")
    pg, audit = make_pg_database("pm_e2e23_lineage"), make_pg_database("pm_e2e23_lineage_audit")
    mongo, es = urlsplit(make_mongo_database("pm_e2e23_lineage")), urlsplit(opensearch_target.url)
    host, _, port = REDIS_URL.removeprefix("redis://").partition(":")
    events = tmp_path / "lineage.jsonl"
    env = {
        "AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_STAGING_R1": pg,
        "AIRFLOW_CONN_POLYMIGRATE_AUDIT": audit,
        "AIRFLOW_CONN_POLYMIGRATE_MONGODB_STAGING_R1": json.dumps(
            {"conn_type": "mongo", "host": mongo.hostname, "port": mongo.port, "schema": mongo.path[1:]}),
        "AIRFLOW_CONN_POLYMIGRATE_REDIS_STAGING_R1": json.dumps(
            {"conn_type": "redis", "host": host, "port": int(port or 6379), "extra": {"db": int(redis_url.rsplit("/", 1)[1])}}),
        "AIRFLOW_CONN_POLYMIGRATE_ELASTICSEARCH_STAGING_R1": json.dumps(
            {"conn_type": "opensearch", "host": es.hostname, "port": es.port, "schema": es.scheme}),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(events), "append": True}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "polymigrate-e2e",
    }
    assert run_dag(specs, env) == "success"
    done = outputs(events)
    assert sorted(done) == ["elasticsearch", "mongodb", "postgresql", "redis"], sorted(done)

    # PostgreSQL: the table, with its new column in the schema after the change, and the versions applied
    pg_event = done["postgresql"]
    (orders,) = pg_event["outputs"]
    pg_url = urlsplit(pg)
    assert orders["namespace"] == f"postgres://{pg_url.hostname}:{pg_url.port}"
    assert orders["name"] == f"{pg_url.path[1:]}.public.orders"
    assert [(f["name"], f["type"]) for f in orders["facets"]["schema"]["fields"]] == [
        ("id", "bigint"), ("total", "numeric(12,2)")]
    assert orders["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "ALTER"
    run_facet = pg_event["run"]["facets"]["polymigrate"]
    assert (run_facet["versions"], run_facet["region"], run_facet["domain"]) == (["1", "2"], "r1", "shop")

    (events_coll,) = done["mongodb"]["outputs"]
    assert (events_coll["namespace"], events_coll["name"]) == (f"mongodb://{mongo.hostname}:{mongo.port}",
                                                               f"{mongo.path[1:]}.events")
    assert {"name": "index:at_1", "type": '{"at":1}'} in [
        {k: f[k] for k in ("name", "type")} for f in events_coll["facets"]["schema"]["fields"]]

    search = {d["name"]: d for d in done["elasticsearch"]["outputs"]}
    assert sorted(search) == [f"{prefix}people", f"{prefix}people_v1"]
    assert search[f"{prefix}people"]["facets"]["datasetType"]["datasetType"] == "ALIAS"
    assert [f["name"] for f in search[f"{prefix}people"]["facets"]["schema"]["fields"]] == ["handle"]
    assert search[f"{prefix}people_v1"]["facets"]["lifecycleStateChange"]["lifecycleStateChange"] == "CREATE"

    (keys,) = done["redis"]["outputs"]
    assert keys["name"] == "shop:session:*"
    assert keys["facets"]["datasetType"]["datasetType"] == "KEY_PATTERN"
    assert rd.ttl("shop:session:1") > 0  # the migration did run
    rd.close()

    # the audit page links the run to what each file changed (recorded whether lineage is on or not)
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.core_api.security import get_user
    from polymigrate.audit import PostgresAuditStore
    from polymigrate_airflow.ui.app import Access, create_app, get_access, get_store

    store = PostgresAuditStore(audit)
    succeeded = {r.event.script: r.event.details.get("datasets") for r in store.query(kind="migration_succeeded")}
    assert succeeded["V2__orders_total.sql"] == [{"kind": "table", "name": "orders", "action": "altered"}]
    assert succeeded["1-session-ttl.lua"] == [{"kind": "keys", "name": "session:*", "action": "written"}]
    app = create_app()

    def reader():
        s = PostgresAuditStore(audit)
        yield s
        s.close()

    app.dependency_overrides[get_store] = reader
    app.dependency_overrides[get_user] = lambda: object()
    app.dependency_overrides[get_access] = lambda: Access("test", frozenset(store.scopes()))
    page = TestClient(app, root_path="/polymigrate").get("/").text
    assert "changed: table <code>orders</code> (altered)" in page
    assert f"alias <code>{prefix}people</code> (created)" in page
    store.close()

