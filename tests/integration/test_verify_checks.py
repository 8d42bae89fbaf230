"""Each adapter's built-in verify checks (``health_checks``) on its real engine: they pass after a
clean run and fail, naming the object, after what an operator can break by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pymongo
import pytest
import redis

from polymigrate.adapters.mongodb.adapter import MongoAdapter, declared_indexes
from polymigrate.adapters.redis.adapter import RedisAdapter
from polymigrate.catalog import discover
from polymigrate.errors import PermanentError
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext
from tests.integration.adapters.es_helpers import PRODUCTS_V2, adapter as es_adapter, migrations as es_migrations, \
    seed, step_file

pytestmark = pytest.mark.integration


def ctx(**kw) -> RunContext:
    return RunContext(**{"domain": "shop", "environment": "testing", "region": "r1", "actor": "tester@host",
                         "run_id": "run-1", "lock_wait_seconds": 30, **kw})


def files(folder: Path, technology: str, content: dict[str, str | dict]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in content.items():
        (folder / name).write_text(body if isinstance(body, str) else json.dumps(body), encoding="utf-8")
    cat = discover("shop", technology, folder)
    assert not cat.problems, cat.problems
    return cat.applicable(technology)


def failed(checks) -> list[str]:
    return [f"{c.name}: {c.detail}" for c in checks if not c.ok]


# --- MongoDB: indexes present as declared ---------------------------------------------------------

CUSTOMERS = {"description": "customers", "commands": [
    {"create": "customers"},
    {"createIndexes": "customers", "indexes": [{"key": {"email": 1}, "name": "email_unique", "unique": True},
                                               {"key": {"created": -1}, "name": "recent"}]}]}
DROP_RECENT = {"description": "recent is not used", "commands": [{"dropIndexes": "customers", "index": "recent"}]}


def test_mongodb_declared_indexes_present_then_one_dropped_by_hand(mongo_url, tmp_path):
    migs = files(tmp_path / "m", "mongodb", {"1-customers.json": CUSTOMERS, "2-drop-recent.json": DROP_RECENT})
    a = MongoAdapter.from_url(mongo_url, domain="shop")
    try:
        migrate(a, migs, ctx())
        checks = a.health_checks(ctx(), migs)
        assert failed(checks) == [] and checks[0].detail == "1 declared index(es) present"  # 'recent' was dropped by 2

        client = pymongo.MongoClient(mongo_url)
        client.get_default_database()["customers"].drop_index("email_unique")
        client.close()
        assert failed(a.health_checks(ctx(), migs)) == [
            "declared indexes: 1 of 1 declared index(es) not as declared: customers.email_unique missing "
            "(dropped or changed by hand? create it again in a new migration)"]
    finally:
        a.close()


def test_declared_indexes_follow_drops_and_renames():
    cmds = CUSTOMERS["commands"] + [{"renameCollection": "db.customers", "to": "db.clients"},
                                    {"dropIndexes": "clients", "index": ["recent"]},
                                    {"create": "tmp"}, {"createIndexes": "tmp", "indexes": [{"key": {"a": 1}, "name": "a"}]},
                                    {"drop": "tmp"}]
    assert declared_indexes(cmds) == {("clients", "email_unique"): {"email": 1}}
    assert declared_indexes(CUSTOMERS["commands"] + [{"dropIndexes": "customers", "index": "*"}]) == {}


# --- Redis: the last migration's cursor finished -------------------------------------------------

COUNT = """-- Increment shop:c:1..1000, cursor = next index; shop:poison:<i> fails the batch holding i.
local start = tonumber(ARGV[1])
if start == 0 then start = 1 end
local last = math.min(start + tonumber(ARGV[2]) - 1, 1000)
for i = start, last do
  if redis.call('EXISTS', ARGV[3] .. 'poison:' .. i) == 1 then return redis.error_reply('poisoned item ' .. i) end
end
for i = start, last do redis.call('INCR', ARGV[3] .. 'c:' .. i) end
local nxt = last + 1
if nxt > 1000 then nxt = 0 end
return {tostring(nxt), last - start + 1}
"""


def test_redis_last_cursor_stopped_half_way_fails_until_the_rerun_finishes(redis_url, tmp_path):
    from polymigrate.spec.models import TechnologyConfig

    client = redis.Redis.from_url(redis_url)
    client.set("shop:poison:550", 1)
    migs = files(tmp_path / "r", "redis", {"1-count.lua": "-- polymigrate: batch_size=100\n" + COUNT})
    a = RedisAdapter.from_url(redis_url, domain="shop", settings=TechnologyConfig(key_prefix="shop:"))
    try:
        with pytest.raises(PermanentError):
            migrate(a, migs, ctx())
        assert failed(a.health_checks(ctx(), migs)) == [
            "last cursor finished: 1-count.lua is failed; 1-count.lua stopped at cursor 501 "
            "(run the DAG again: the migration resumes from its cursor)"]
        client.delete("shop:poison:550")
        migrate(a, migs, ctx(run_id="run-2"))
        [check] = a.health_checks(ctx(), migs)
        assert check.ok and check.detail == "1-count.lua: 1000 key(s) in 10 batch(es), cursor back to 0"
    finally:
        a.close()
        client.close()


# --- Elasticsearch / OpenSearch: aliases where the ledger says, counts -----------------------------

def test_alias_on_the_index_the_ledger_says_with_every_document_then_moved_by_hand(opensearch_target, tmp_path):
    t = opensearch_target
    alias = t.name("products")
    seed(t, alias, 120)
    migs = es_migrations(tmp_path / "e", {"1-products-v2.json": step_file({"blue_green": {
        "alias": alias, "body": {"settings": {"number_of_shards": 1}, "mappings": PRODUCTS_V2}, "catch_up": "none"}})})
    a = es_adapter(t)
    try:
        migrate(a, migs, ctx())
        [check] = a.health_checks(ctx(), migs)
        assert check.ok and check.name == f"alias {alias}"
        assert check.detail == f"on {alias}_v2 as 1-products-v2.json recorded; 120 document(s), retained {alias}_v1 has 120"

        t.api.update_aliases([{"remove": {"index": f"{alias}_v2", "alias": alias}},
                              {"add": {"index": f"{alias}_v1", "alias": alias}}])
        assert failed(a.health_checks(ctx(), migs)) == [
            f"alias {alias}: points to {alias}_v1, the ledger (1-products-v2.json) says {alias}_v2, the new index; "
            "someone moved it by hand? move it back with POST /_aliases"]

        t.api.update_aliases([{"remove": {"index": f"{alias}_v1", "alias": alias}},
                              {"add": {"index": f"{alias}_v2", "alias": alias, "is_write_index": True}}])
        t.api.request("POST", f"/{alias}_v2/_delete_by_query", params={"refresh": "true"},
                      body={"query": {"ids": {"values": ["p1", "p2"]}}})
        assert failed(a.health_checks(ctx(), migs)) == [
            f"alias {alias}: on {alias}_v2 as 1-products-v2.json recorded; 118 document(s), retained {alias}_v1 has 120: "
            f"2 missing (inspect before {alias}_v1 expires)"]
    finally:
        a.close()
