"""The Redis adapter on the real server (POLYMIGRATE_TEST_REDIS_DB is flushed around each test)."""

from __future__ import annotations

import json

import shutil
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.cluster import key_slot

from polymigrate.adapters.redis.adapter import RedisAdapter
from polymigrate.adapters.redis.lease import Lease
from polymigrate.adapters.redis.scripts import check_same_slot, declared_keys
from polymigrate.adapters.redis.templates import NAMES, template
from polymigrate.catalog import discover
from polymigrate.errors import LockNotAcquired, PermanentError, TransientError
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext, Status
from polymigrate.spec.models import TechnologyConfig
from tests.conformance.adapter_suite import AdapterConformance, AdapterKit

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]

# A cursor-protocol generator: the cursor is the next item index, "0" when every item exists.
SEED_ITEMS = """-- Seed 2,500 item view counters, ARGV[2] per call.
local start = tonumber(ARGV[1])
if start == 0 then start = 1 end
local last = math.min(start + tonumber(ARGV[2]) - 1, 2500)
for i = start, last do
  redis.call('SET', ARGV[3] .. 'item:' .. i .. ':views', i)
end
local nxt = last + 1
if nxt > 2500 then nxt = 0 end
return {tostring(nxt), last - start + 1}
"""
VIEWS_TO_HASH = """-- Move item:<id>:views strings into hash item:<id>, one SCAN batch per call.
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3] .. 'item:*:views', 'COUNT', tonumber(ARGV[2]), 'TYPE', 'string')
local n = 0
for _, key in ipairs(res[2]) do
  local id = string.match(key, 'item:(%d+):views$')
  redis.call('HSET', ARGV[3] .. 'item:' .. id, 'views', redis.call('GET', key))
  redis.call('DEL', key)
  n = n + 1
end
return {res[1], n}
"""
BROKEN = """-- Calls a command Redis does not have.
local res = redis.call('SCAN', ARGV[1], 'COUNT', tonumber(ARGV[2]))
redis.call('NOSUCHCOMMAND', 'x')
return {res[1], 0}
"""
# Touches every c:<i> (1..total) once per cursor step; INCR is deliberately NOT idempotent, so a
# counter above 1 proves a batch ran twice. A poison:<i> key makes the batch holding i fail first.
COUNT_ONCE = """-- Increment c:1..c:{total}, cursor = next index.
local start = tonumber(ARGV[1])
if start == 0 then start = 1 end
local last = math.min(start + tonumber(ARGV[2]) - 1, {total})
for i = start, last do
  if redis.call('EXISTS', 'poison:' .. i) == 1 then return redis.error_reply('poisoned item ' .. i) end
end
for i = start, last do redis.call('INCR', 'c:' .. i) end
local nxt = last + 1
if nxt > {total} then nxt = 0 end
return {tostring(nxt), last - start + 1}
"""


def ctx(**kw) -> RunContext:
    return RunContext(domain="shop", environment="testing", region="r1", actor="tester@host",
                      run_id=kw.pop("run_id", "run-1"), lock_wait_seconds=kw.pop("lock_wait_seconds", 5), **kw)


def write(folder: Path, files: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / name).write_text(body, encoding="utf-8")
    cat = discover("shop", "redis", folder)
    assert not cat.problems, cat.problems
    return cat.applicable("redis")


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def adapter(redis_url):
    made = []

    def make(settings=None, client=None, **kw) -> RedisAdapter:
        a = RedisAdapter(client, domain="shop", settings=settings, **kw) if client is not None else \
            RedisAdapter.from_url(redis_url, domain="shop", settings=settings, **kw)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


class TestRedisConformance(AdapterConformance):
    @pytest.fixture
    def kit(self, redis_url, tmp_path):
        return AdapterKit(
            technology="redis",
            make_adapter=lambda: RedisAdapter.from_url(redis_url, domain="conformance"),
            good_files={"1-seed-items.lua": SEED_ITEMS, "2-views-to-hash.lua": VIEWS_TO_HASH},
            broken_file=("3-broken.lua", BROKEN),
            tmp_path=tmp_path,
            # a Lua syntax error: SCRIPT LOAD refuses it, so no call of it ever ran
            nothing_run_file=("3-mark.lua", "redis.call('SET', 'marked', '1'\nreturn 1\n",
                              "redis.call('SET', 'marked', '1')\nreturn 1\n"),
        )


def test_sample_social_commerce_migrations_rename_move_and_expire(client, adapter, tmp_path):
    pipe = client.pipeline()
    for i in range(3000):
        pipe.set(f"social:user:{i}:profile", f"profile-{i}")
    pipe.set("social:user:7:profile", "profile-7", ex=500)  # RENAME keeps the TTL
    # cached JSON profiles: the release's migrate step adds full_name, keeping the old names and the TTL
    pipe.set("social:user:8:profile", json.dumps({"first_name": "Ada", "last_name": "Lovelace"}), ex=900)
    pipe.set("social:user:9:profile", json.dumps({"first_name": "Grace", "full_name": "G. Hopper"}))
    for i in range(200):
        pipe.set(f"social:post:{i}:likes", i)
        pipe.set(f"social:post:{i}:views", 10 * i)
    pipe.hset("social:post_stats:5", "likes", 100)  # already counted in the hash by the new code
    for i in range(300):
        pipe.set(f"social:session:{i}", "s", ex=60 if i % 2 else None)
    pipe.set("user:1:profile", "another domain's key")
    pipe.execute()
    migs = write(tmp_path / "redis", {p.name: p.read_text() for p in (ROOT / "migration_specs/social-commerce/redis").glob("*.lua")})
    a = adapter(TechnologyConfig(key_prefix="social:", batch_size=250))
    result = migrate(a, migs, ctx())

    assert [x["script"] for x in result.applied] == ["1-rename-profile-keys.lua", "2-post-counters-to-hash.lua",
                                                      "3-session-ttl-policy.lua", "4-profile-cache-full-name.lua"]
    assert json.loads(client.get("social:user_profile:8")) == {"first_name": "Ada", "last_name": "Lovelace",
                                                                "full_name": "Ada Lovelace"}
    assert 0 < client.ttl("social:user_profile:8") <= 900
    assert json.loads(client.get("social:user_profile:9")) == {"first_name": "Grace", "full_name": "G. Hopper"}
    assert not list(client.scan_iter(match="social:user:*:profile", count=1000))
    assert client.get("social:user_profile:2999") == b"profile-2999"
    assert 0 < client.ttl("social:user_profile:7") <= 500
    assert client.hgetall("social:post_stats:5") == {b"likes": b"105", b"views": b"50"}
    assert not list(client.scan_iter(match="social:post:*", count=1000))
    assert client.ttl("social:session:2") == 30 * 24 * 3600 and client.ttl("social:session:3") <= 60
    assert client.get("user:1:profile") == b"another domain's key"  # outside the key_prefix
    rows = {e.script: e for e in a.read_ledger()}
    assert rows["1-rename-profile-keys.lua"].progress["processed"] == 3000
    assert rows["1-rename-profile-keys.lua"].progress["batches"] > 1
    assert rows["2-post-counters-to-hash.lua"].progress["processed"] == 400
    assert rows["3-session-ttl-policy.lua"].progress["processed"] == 150


def test_cursor_script_is_called_with_each_returned_cursor_and_the_batch_size(client, adapter, tmp_path):
    calls = """-- polymigrate: batch_size=100
redis.call('RPUSH', 'calls', ARGV[1] .. '/' .. ARGV[2])
local nxt = tonumber(ARGV[1]) + tonumber(ARGV[2])
if nxt >= 1000 then nxt = 0 end
return {tostring(nxt), tonumber(ARGV[2])}
"""
    migs = write(tmp_path / "redis", {"1-calls.lua": calls})
    migrate(adapter(TechnologyConfig(batch_size=7)), migs, ctx())  # the file's directive wins
    assert [c.decode() for c in client.lrange("calls", 0, -1)] == [f"{i}/100" for i in range(0, 1000, 100)]


def test_pause_between_batches_is_honoured(client, adapter, tmp_path):
    body = COUNT_ONCE.replace("{total}", "50")
    migs = write(tmp_path / "redis", {"1-count.lua": "-- polymigrate: batch_size=10, pause_ms=60\n" + body})
    started = time.monotonic()
    migrate(adapter(), migs, ctx())
    assert time.monotonic() - started >= 4 * 0.06  # five batches, four pauses between them
    assert all(client.get(f"c:{i}") == b"1" for i in range(1, 51))


def test_one_shot_script_runs_once(client, adapter, tmp_path):
    migs = write(tmp_path / "redis", {"1-feature-flag.lua": "redis.call('INCR', 'flags:version')\nreturn 'OK'\n"})
    a = adapter()
    migrate(a, migs, ctx())
    assert migrate(a, migs, ctx(run_id="run-2")).applied == []
    assert client.get("flags:version") == b"1"
    [row] = a.read_ledger()
    assert row.status is Status.SUCCESS and row.progress["batches"] == 1


def test_declared_keys_are_passed_as_KEYS(client, adapter, tmp_path):
    body = "-- Flags for shop 42.\n-- keys: config:{42}:flags, config:{42}:limits\n" \
           "redis.call('HSET', KEYS[1], 'count', #KEYS)\nredis.call('SET', KEYS[2], ARGV[3] .. 'x')\n"
    migrate(adapter(), write(tmp_path / "redis", {"1-flags.lua": body}), ctx())
    assert client.hget("config:{42}:flags", "count") == b"2"
    assert client.get("config:{42}:limits") == b"x"


def test_failed_batch_resumes_from_the_last_completed_batch(client, adapter, tmp_path):
    client.set("poison:550", 1)
    migs = write(tmp_path / "redis", {"1-count.lua": "-- polymigrate: batch_size=100\n" + COUNT_ONCE.replace("{total}", "1000")})
    a = adapter()
    with pytest.raises(PermanentError) as info:
        migrate(a, migs, ctx())
    assert "1-count.lua" in str(info.value) and "poisoned item 550" in str(info.value)
    [row] = a.read_ledger()
    assert row.status is Status.FAILED and row.progress["cursor"] == "501" and row.progress["batches"] == 5
    assert "poisoned item 550" in row.progress["error"]

    client.delete("poison:550")  # the data problem is fixed; the file is unchanged
    result = migrate(a, migs, ctx(run_id="run-2"))
    assert result.applied[0]["action"] == "resume"
    assert {client.get(f"c:{i}") for i in range(1, 1001)} == {b"1"}  # no batch ran twice, none skipped
    [row] = a.read_ledger()
    assert row.status is Status.SUCCESS and row.run_id == "run-2"
    assert row.progress["processed"] == 1000 and row.progress["batches"] == 10
    assert "error" not in row.progress


def test_script_cache_flushed_mid_run_is_reloaded(client, adapter, tmp_path, redis_url):
    class FlushingRedis(redis.Redis):
        """A real client whose server loses its script cache before the first two calls (as after a restart)."""
        flushes = 0

        def evalsha(self, *args):
            if self.flushes < 2:
                self.script_flush()
                self.flushes += 1
            return super().evalsha(*args)

    migs = write(tmp_path / "redis", {"1-count.lua": "-- polymigrate: batch_size=100\n" + COUNT_ONCE.replace("{total}", "500")})
    flaky = FlushingRedis.from_url(redis_url)
    migrate(adapter(client=flaky), migs, ctx())
    assert flaky.flushes == 2
    assert {client.get(f"c:{i}") for i in range(1, 501)} == {b"1"}
    flaky.close()


def test_runtime_error_names_file_line_and_statement(adapter, tmp_path):
    body = "-- Break on purpose.\nlocal t = nil\n\nreturn t.field\n"
    migs = write(tmp_path / "redis", {"1-nil-index.lua": body})
    with pytest.raises(PermanentError) as info:
        migrate(adapter(), migs, ctx())
    assert not isinstance(info.value, TransientError)
    assert info.value.line == 4 and f"1-nil-index.lua:4" in str(info.value)
    assert "return t.field" in str(info.value) and "attempt to index" in str(info.value)


def test_syntax_error_names_the_line_and_runs_nothing(client, adapter, tmp_path):
    body = "-- Syntax error on line 3.\nredis.call('SET', 'ran', 1)\nlocal x = = 2\nreturn {'0', 0}\n"
    migs = write(tmp_path / "redis", {"1-syntax.lua": body})
    a = adapter()
    with pytest.raises(PermanentError) as info:
        migrate(a, migs, ctx())
    assert info.value.line == 3 and "local x = = 2" in str(info.value) and "nothing ran" in str(info.value)
    assert client.get("ran") is None
    assert [e.status for e in a.read_ledger()] == [Status.FAILED]


def test_lease_of_a_crashed_run_expires_and_the_old_owner_cannot_release_the_new_one(client, redis_url):
    crashed = Lease(client, "pm:lock", "crashed@host run=1", lease_ms=300)
    crashed.acquire(0, "t")
    crashed._stop.set()  # the process died: nobody renews it any more
    with pytest.raises(LockNotAcquired) as info:
        Lease(client, "pm:lock", "next@host", lease_ms=300).acquire(0.05, "t")
    assert info.value.holder == "crashed@host run=1" and "crashed@host run=1" in str(info.value)

    successor = Lease(client, "pm:lock", "next@host run=2", lease_ms=5000)
    successor.acquire(2, "t")  # waits for the expiry
    crashed.release()  # compare-and-delete: not its key any more
    assert client.get("pm:lock").decode().startswith("next@host run=2")
    successor.release()
    assert client.get("pm:lock") is None


def test_lease_is_renewed_while_a_long_migration_runs(client, adapter, tmp_path):
    migs = write(tmp_path / "redis", {"1-slow.lua": "-- polymigrate: batch_size=10, pause_ms=50\n" + COUNT_ONCE.replace("{total}", "200")})
    migrate(adapter(lease_ms=300), migs, ctx())  # 20 batches x 50 ms: three times the lease
    assert {client.get(f"c:{i}") for i in range(1, 201)} == {b"1"}


def test_a_run_that_lost_its_lease_writes_no_further_batch(client, adapter, tmp_path):
    migs = write(tmp_path / "redis", {"1-count.lua": "-- polymigrate: batch_size=10, pause_ms=100\n" + COUNT_ONCE.replace("{total}", "300")})
    a = adapter()
    lock_key = a.lock_key

    def steal():  # as if the lease had expired during a long pause and another run took the lock
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not client.hget(a.progress_key, "1"):
            time.sleep(0.005)
        client.set(lock_key, "intruder@host #x")

    t = threading.Thread(target=steal)
    t.start()
    with pytest.raises(TransientError) as info:
        migrate(a, migs, ctx())
    t.join()
    assert "lease" in str(info.value)
    done = sum(1 for i in range(1, 301) if client.get(f"c:{i}") == b"1")
    assert 0 < done < 300
    client.delete(lock_key)
    migrate(a, migs, ctx(run_id="run-2"))
    assert {client.get(f"c:{i}") for i in range(1, 301)} == {b"1"}


def test_unreachable_server_is_transient(tmp_path):
    a = RedisAdapter.from_url("redis://127.0.0.1:1/0", domain="shop")
    migs = write(tmp_path / "redis", {"1-x.lua": "return 1\n"})
    try:
        with pytest.raises(TransientError):
            migrate(a, migs, ctx())
        with pytest.raises(TransientError):
            a.read_ledger()
    finally:
        a.close()


def test_client_decoding_responses_works_the_same(client, adapter, tmp_path, redis_url):
    for i in range(100):
        client.set(f"user:{i}:profile", i)
    text_client = redis.Redis.from_url(redis_url, decode_responses=True)
    migs = write(tmp_path / "redis", {"1-rename.lua": template("rename-keys")})
    a = adapter(client=text_client)
    migrate(a, migs, ctx())
    assert a.read_ledger()[0].progress["processed"] == 100
    assert a.snapshot()["shapes"] == [{"shape": "user_profile:*", "type": "string", "count": 100, "with_ttl": 0}]
    text_client.close()


@pytest.mark.parametrize("name", NAMES)
def test_every_template_loads_and_runs_on_an_empty_keyspace(name, adapter, tmp_path):
    migs = write(tmp_path / "redis", {f"1-{name}.lua": template(name).replace("__DESCRIPTION__", name)})
    assert migrate(adapter(), migs, ctx()).current_version == "1"


def test_polymigrate_new_writes_the_cursor_template(tmp_path):
    from typer.testing import CliRunner

    from polymigrate.cli import app

    specs = tmp_path / "specs"
    shutil.copytree(ROOT / "migration_specs" / "environments", specs / "environments")
    (specs / "shop" / "redis").mkdir(parents=True)
    (specs / "shop" / "domain.yaml").write_text("description: Shop.\ntechnologies:\n  redis: {}\n")
    out = CliRunner().invoke(app, ["new", "shop", "redis", "expire old carts", "--specs", str(specs)])
    assert out.exit_code == 0, out.output
    [path] = (specs / "shop" / "redis").glob("*.lua")
    assert path.name == "1-expire-old-carts.lua"
    assert path.read_text().startswith("-- expire old carts\n") and "return {res[1], changed}" in path.read_text()


def test_key_prefix_with_glob_characters_is_refused():
    with pytest.raises(PermanentError, match="glob"):
        RedisAdapter(redis.Redis(), domain="shop", settings=TechnologyConfig(key_prefix="shop:*"))


def test_snapshot_ignores_polymigrate_keys_and_groups_key_shapes(client, adapter, tmp_path):
    a = adapter()
    migrate(a, write(tmp_path / "redis", {"1-x.lua": "return 1\n"}), ctx())  # writes the ledger
    client.set("cart:9f1c2d3e-1111-2222-3333-444455556666:items", 1)
    client.set("cart:1f1c2d3e-1111-2222-3333-444455556666:items", 1, ex=100)
    assert a.snapshot()["shapes"] == [{"shape": "cart:*:items", "type": "string", "count": 2, "with_ttl": 1}]


# -- cluster awareness (the slot rule is pure: CRC16 of the hash tag, modulo 16384) --------------

def test_declared_keys_are_read_from_the_header_only():
    body = "-- keys: a:{1}, b:{1}\n-- keys: c:{1}\nlocal x = 1\n-- keys: not:a:key\n"
    assert declared_keys(body) == ["a:{1}", "b:{1}", "c:{1}"]


def test_keys_crossing_hash_slots_are_refused_naming_the_slots(tmp_path):
    [mig] = write(tmp_path / "redis", {"1-cart.lua": "return 1\n"})
    assert key_slot(b"cart:{42}:items") == key_slot(b"cart:{42}:total") == key_slot(b"42")
    check_same_slot(["cart:{42}:items", "cart:{42}:total"], mig)  # one slot: fine
    with pytest.raises(PermanentError) as info:
        check_same_slot(["cart:42:items", "cart:42:total"], mig)
    text = str(info.value)
    assert "1-cart.lua" in text and "hash tag" in text
    assert f"slot {key_slot(b'cart:42:items')}: cart:42:items" in text
