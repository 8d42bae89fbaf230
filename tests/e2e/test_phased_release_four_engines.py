"""social-commerce's ``full_name`` release as Airflow DAG runs (``dag.test()``) on all four real
engines — PostgreSQL, FerretDB (MongoDB protocol), OpenSearch and Redis — in two regions (r2 without
OpenSearch: this machine has one node, and two regions on one ledger are refused at plan).

A copy of the sample with a few seed rows, posts, people and cached profiles per region; region r2
fails in its migrate phase (a step that refuses until the region is ready): its contract never
runs, so the old columns and post fields the application may still read stay, while r1 completed
the release. After the fix, the next run completes r2. Phase order is read from the task instances
(every expand ended before any migrate started, every migrate before the verify, the verify before
any contract) and from each engine's ledger.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.conftest import SPECS

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

REGIONS = {"r1": 11, "r2": 12}  # region -> this test's Redis DB number (its own Redis server, see .helper-env)
USERS = 12
POSTS = 10  # per region; FerretDB changes ~15 documents/s


def env_yaml(r2_ready: str) -> str:
    return textwrap.dedent(f"""\
        policy:
          approvals: {{required: 0}}
          rollout: {{strategy: sequential, halt_on_failure: true}}
          retries: 0
          lock_wait_seconds: 20
        regions:
          r1:
            placeholders: {{region_ready: "yes"}}
          r2:
            placeholders: {{region_ready: "{r2_ready}"}}
            # one OpenSearch node here: a second region on it would share r1's ledger, which plan
            # refuses; regions on their own clusters each run the files
            technologies: [postgresql, mongodb, redis]
        """)


def seed_files(specs: Path, es_prefix: str) -> None:
    """Test-only files in the copy, in the expand phase before the release: the data the release moves."""
    dom = specs / "social-commerce"
    (dom / "postgresql/tables/V1.5__seed_users.sql").write_text(
        "INSERT INTO users (email, first_name, last_name)\n"
        f"SELECT 'u' || g || '@example.com', 'First' || g, CASE WHEN g % 4 <> 0 THEN 'Last' || g END\n"
        f"  FROM generate_series(1, {USERS}) g;\n")
    (dom / "mongodb/collections/1.5-seed-posts.py").write_text(textwrap.dedent(f"""\
        def up(db, ctx):
            if db.posts.count_documents({{}}) == 0:
                db.posts.insert_many([{{"_id": i, "schemaVersion": 1, "body": "post %d" % i,
                                        "author": {{"user_id": i, "first_name": "First%d" % i, "last_name": "Last%d" % i}}}}
                                       for i in range(1, {POSTS + 1})])


        def down(db, ctx):
            db.posts.delete_many({{}})
        """))
    people = [{"index": f"{es_prefix}people", "id": str(i), "doc": {"user_id": i, "handle": f"h{i}",
               "full_name": f"First{i} Last{i}", "followers": i, "updated_at": "2026-11-01T00:00:00Z"}}
              for i in range(1, 6)]
    (dom / "elasticsearch/1.5-seed-people.json").write_text(json.dumps({
        "description": "test seed: a few people in people_v1, through the alias",
        "steps": [{"method": "PUT", "path": f"/{p['index']}/_doc/{p['id']}", "body": p["doc"]}
                  for p in people]}, indent=1))
    # the step r2 fails on until it is ready: a migrate step after the PostgreSQL backfill and the
    # MongoDB transform, so a failure in one engine's migrate must hold back every engine's contract
    (dom / "redis/5-region-ready.lua").write_text(textwrap.dedent("""\
        -- polymigrate: phase=migrate
        if '${region_ready}' ~= 'yes' then
          return redis.error_reply('region not ready for the full_name release: ${region_ready}')
        end
        return {'0', 0}
        """))


@pytest.fixture
def release(tmp_path, make_pg_database, make_mongo_database, mongo_server, opensearch_target, monkeypatch,
            airflow_db):
    import pymongo
    import redis
    from tests.conftest import REDIS_URL

    specs = tmp_path / "specs"
    shutil.copytree(SPECS, specs, ignore=shutil.ignore_patterns("__pycache__"))
    for name in [p.name for p in specs.iterdir() if p.is_dir()]:
        if name not in ("environments", "common", "social-commerce"):
            shutil.rmtree(specs / name)
    for env in (specs / "environments").glob("*.yaml"):
        if not env.name.startswith("_"):
            env.unlink()
    (specs / "environments/e2e.yaml").write_text(env_yaml("not yet"))
    domain = specs / "social-commerce/domain.yaml"
    # each region's own MongoDB database (the connection's), this test's own OpenSearch names
    prefix = opensearch_target.prefix
    domain.write_text(domain.read_text().replace("    database: social_commerce\n", "").replace(
        "  elasticsearch:\n", f"  elasticsearch:\n    ledger: \"{opensearch_target.ledger}\"\n").replace(
        "elasticsearch:people.", f"elasticsearch:{prefix}people."))  # the labels follow the renamed index
    for f in (specs / "social-commerce/elasticsearch").glob("*.json"):
        f.write_text(f.read_text().replace('"people_v1"', f'"{prefix}people_v1"').replace(
            '"alias": "people"', f'"alias": "{prefix}people"'))
    suite = specs / "social-commerce/expectations/people.yaml"  # the sample's suite follows the renamed alias
    suite.write_text(suite.read_text().replace("object: people\n", f"object: {prefix}people\n"))
    seed_files(specs, prefix)
    if mongo_server.is_ferretdb:  # its collMod files are tested on a real MongoDB; the demo leaves them out too
        for name in ("4-require-posts-schema-version-2.json", "5-activity-feed-validator-and-expiry.json"):
            (specs / "social-commerce/mongodb/collections" / name).unlink()
        # ... and with 5- goes the TTL index that enforces activity_feed's retention label
        domain.write_text(domain.read_text().replace("{kind: pii, level: low, retention: 90d}", "{kind: pii, level: low}"))
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))

    pg, mongo, rd = {}, {}, {}
    host, _, port = REDIS_URL.removeprefix("redis://").partition(":")
    es = urlsplit(opensearch_target.url)
    for region, db in REGIONS.items():
        pg[region] = make_pg_database("pm_e2e4")
        mongo[region] = make_mongo_database("pm_e2e4")
        m = urlsplit(mongo[region])
        conns = {
            "POSTGRESQL": pg[region],
            "MONGODB": json.dumps({"conn_type": "mongo", "host": m.hostname, "port": m.port, "schema": m.path[1:]}),
            "REDIS": json.dumps({"conn_type": "redis", "host": host, "port": int(port or 6379), "extra": {"db": db}}),
            "ELASTICSEARCH": json.dumps({"conn_type": "opensearch", "host": es.hostname, "port": es.port,
                                         "schema": es.scheme}),
        }
        for tech, value in conns.items():
            monkeypatch.setenv(f"AIRFLOW_CONN_POLYMIGRATE_{tech}_E2E_{region.upper()}", value)
        rd[region] = redis.Redis.from_url(f"{REDIS_URL}/{db}", decode_responses=True)
        rd[region].flushdb()
        for i in range(1, 4):  # cached profiles under the old key names, moved by 1- and filled by 4-
            rd[region].set(f"social:user:{i}:profile", json.dumps({"first_name": f"First{i}", "last_name": f"Last{i}"}))
    client = pymongo.MongoClient(mongo["r1"])
    yield specs, pg, {r: client[urlsplit(u).path[1:]] for r, u in mongo.items()}, rd, opensearch_target
    client.close()
    for c in rd.values():
        c.flushdb()
        c.close()


def run(specs: Path, domain: str):
    from polymigrate_airflow.renderer import build_dags

    dr = build_dags(specs)[f"migrate__{domain}__e2e"].test()
    return dr, {ti.task_id: ti for ti in dr.get_task_instances()}


def columns(url: str) -> set[str]:
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute("SELECT column_name FROM information_schema.columns "
                                        "WHERE table_schema = 'social_commerce' AND table_name = 'users'")}


def assert_phase_major(tis: dict, region: str, engines: int = 4) -> None:
    """Every expand task ended before any migrate task started, every migrate before the verify
    before contract, and that verify before any contract task."""
    def of(phase):
        return [ti for tid, ti in tis.items() if tid.startswith(f"{region}.{phase}_") and ti.state == "success"]

    expand, migrate, contract = of("expand"), of("migrate"), of("contract")
    gate = tis[f"{region}.verify_before_contract"]
    assert len(expand) == engines and len(migrate) == engines and len(contract) == 2, sorted(tis)
    assert max(t.end_date for t in expand) <= min(t.start_date for t in migrate)
    assert max(t.end_date for t in migrate) <= gate.start_date
    assert gate.end_date <= min(t.start_date for t in contract)


def test_the_full_name_release_runs_phase_major_on_four_engines_and_a_failed_migrate_holds_back_contract(release):
    specs, pg, mongo, rd, search = release
    dr, _ = run(specs, "common")
    assert dr.state == "success"

    dr, tis = run(specs, "social_commerce")
    states = {k: v.state for k, v in tis.items()}
    assert dr.state == "failed", states
    # r1 (first in the rollout) completed the whole release, phase-major
    assert states["r1.verify"] == "success", states
    assert_phase_major(tis, "r1")
    assert {"first_name", "last_name"}.isdisjoint(columns(pg["r1"])) and "full_name" in columns(pg["r1"])
    # r2: expand and the PostgreSQL backfill and MongoDB transform ran; the Redis migrate step failed
    assert not any(t.startswith("r2.") and t.endswith("_elasticsearch") for t in states), states
    for task in ("expand_postgresql", "expand_mongodb", "expand_redis", "migrate_postgresql", "migrate_mongodb"):
        assert states[f"r2.{task}"] == "success", (task, states)
    assert states["r2.migrate_redis"] == "failed"
    assert states["r2.verify_before_contract"] == "upstream_failed"
    assert states["r2.contract_postgresql"] == states["r2.contract_mongodb"] == "upstream_failed"
    # ... so nothing the old application reads is gone in r2: its columns and post fields are intact,
    # next to the new ones the migrate phase filled
    assert {"first_name", "last_name", "full_name"} <= columns(pg["r2"])
    with psycopg.connect(pg["r2"]) as c:
        assert c.execute("SELECT count(*) FROM social_commerce.users WHERE full_name IS NULL").fetchone() == (0,)
        assert c.execute("SELECT first_name, full_name FROM social_commerce.users WHERE email = 'u3@example.com'"
                         ).fetchone() == ("First3", "First3 Last3")
        assert c.execute("SELECT is_nullable FROM information_schema.columns WHERE table_schema = 'social_commerce' "
                         "AND table_name = 'users' AND column_name = 'full_name'").fetchone() == ("YES",)
    assert mongo["r2"].posts.count_documents({"author.first_name": {"$exists": True}, "schemaVersion": 2}) == POSTS
    assert mongo["r1"].posts.count_documents({"author.first_name": {"$exists": True}}) == 0
    assert mongo["r1"].posts.find_one({"_id": 2})["author"] == {"user_id": 2, "full_name": "First2 Last2"}

    (specs / "environments/e2e.yaml").write_text(env_yaml("yes"))
    dr, tis = run(specs, "social_commerce")
    states = {k: v.state for k, v in tis.items()}
    assert dr.state == "success", states
    assert_phase_major(tis, "r2", engines=3)  # r1 had nothing left: its tasks succeeded without applying anything

    for region in REGIONS:
        assert {"first_name", "last_name"}.isdisjoint(columns(pg[region])), region
        with psycopg.connect(pg[region]) as c:
            names = c.execute("SELECT email, full_name FROM social_commerce.users ORDER BY id").fetchall()
            order = [r[0] for r in c.execute("SELECT script FROM polymigrate.schema_history "
                                              "WHERE status = 'success' AND version IS NOT NULL "
                                              "ORDER BY installed_rank")]
        assert len(names) == USERS and ("u4@example.com", "First4") in names and ("u5@example.com", "First5 Last5") in names
        assert order.index("tables/V1.10__backfill_users_full_name.sql") < order.index("tables/V2__check_users_full_name_present.sql")
        assert order[-3:] == ["tables/V2__check_users_full_name_present.sql", "tables/V2.1__users_full_name_not_null.sql",
                              "tables/V3__drop_users_first_last_name.sql"]
        posts = list(mongo[region].posts.find({}, {"author": 1, "schemaVersion": 1}))
        assert len(posts) == POSTS and all(p["schemaVersion"] == 2 and set(p["author"]) == {"user_id", "full_name"}
                                           for p in posts), posts
        assert json.loads(rd[region].get("social:user_profile:1"))["full_name"] == "First1 Last1"
        assert not rd[region].keys("social:user:*:profile")

    # OpenSearch: r1's files made the alias switch (r2 has no OpenSearch of its own here)
    aliases = search.api.request("GET", f"/_alias/{search.prefix}people")
    assert list(aliases) == [f"{search.prefix}people_v2"]
    hits = search.api.request("POST", f"/{search.prefix}people/_search",
                              body={"query": {"match_phrase_prefix": {"full_name.prefix": "First3 La"}}})
    assert [h["_id"] for h in hits["hits"]["hits"]] == ["3"]
