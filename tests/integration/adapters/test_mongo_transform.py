"""The batched document transform (``ctx.transform``) on the real server at MONGO_URI: order,
checkpoints, throttle, progress, and exactly-once under kill -9 and a paused lock holder.

The crash tests run the migration in a child process and kill it for real. Where the kill must land
at one precise point (after a batch's writes, before its checkpoint; half way through a batch), the
child wraps ``Collection.bulk_write`` to SIGKILL itself there: the writes before it reached the
server for real, nothing after it did.
"""

from __future__ import annotations

import functools
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pymongo
import pytest
from bson import ObjectId

from polymigrate.adapters.mongodb import transform as mongo_transform
from polymigrate.adapters.mongodb.adapter import MongoAdapter
from polymigrate.adapters.mongodb.lease import LeaseLost
from polymigrate.catalog import discover
from polymigrate.errors import PermanentError
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

COUNT_ONCE = '''"""Counts every document once: $inc is not idempotent, so n == 2 anywhere means a double apply."""


def up(db, ctx):
    ctx.transform("items", {}, {"$inc": {"n": 1}}, name="count", batch_size=BATCH)
'''
COUNT_ONCE_PER_DOC = '''"""A different update per document (so each is its own write in the batch), not idempotent either."""


def up(db, ctx):
    ctx.transform("items", {}, lambda doc: {"$inc": {"n": 1}, "$set": {"twice_i": doc["i"] * 2}},
                  name="count", projection={"i": 1}, batch_size=BATCH)
'''


def ctx(**kw) -> RunContext:
    return RunContext(**{**dict(domain="shop", environment="testing", region="r1", actor="tester@host",
                                run_id="run-1", lock_wait_seconds=10), **kw})


def write(folder: Path, files: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / name).write_text(body, encoding="utf-8")
    cat = discover("shop", "mongodb", folder)
    assert not cat.problems, cat.problems
    return cat.applicable("mongodb")


def seed(url: str, n: int, *, object_ids: bool = True) -> pymongo.collection.Collection:
    client = pymongo.MongoClient(url)
    coll = client.get_default_database()["items"]
    for start in range(0, n, 5000):
        coll.insert_many([{"_id": ObjectId() if object_ids else i, "i": i, "n": 0}
                          for i in range(start, min(n, start + 5000))], ordered=False)
    return coll


def counts(coll) -> dict[int, int]:
    out: dict[int, int] = {}
    for d in coll.find({}, {"n": 1}):
        out[d.get("n", 0)] = out.get(d.get("n", 0), 0) + 1
    return out


def fingerprint(coll) -> str:
    h = hashlib.sha256()
    for d in coll.find({}).sort("_id", 1):
        h.update(repr(sorted(d.items())).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _client(url: str) -> pymongo.MongoClient:
    return pymongo.MongoClient(url)  # one per database for the whole session: the tests poll with it


def row(url: str, version: str = "1") -> dict:
    return _client(url).get_default_database()["polymigrate_schema_history"].find_one({"_id": f"shop:{version}"}) or {}


@pytest.fixture
def adapter(mongo_url):
    made = []

    def make(url=None, **kw) -> MongoAdapter:
        a = MongoAdapter.from_url(url or mongo_url, domain="shop", **kw)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


# --- in-process behaviour -------------------------------------------------------------------------

def test_transform_changes_each_document_once_in_id_order_with_progress(adapter, mongo_url, tmp_path, caplog,
                                                                        monkeypatch):
    coll = seed(mongo_url, 230, object_ids=False)
    order: list = []
    monkeypatch.setattr(mongo_transform, "PROGRESS_EVERY_S", 0.0)
    migs = write(tmp_path / "m", {"1-count.py": COUNT_ONCE.replace("BATCH", "40")})
    a = adapter()
    original = mongo_transform._operations

    def spy(docs, *args, **kw):
        order.extend(d["_id"] for d in docs)
        return original(docs, *args, **kw)

    monkeypatch.setattr(mongo_transform, "_operations", spy)
    with caplog.at_level("INFO", logger="polymigrate.mongo"):
        result = migrate(a, migs, ctx())
    assert order == sorted(order) and len(order) == 230
    assert counts(coll) == {1: 230}
    r = row(mongo_url)
    state = r["progress"]["transforms"]["count"]
    assert (state["processed"], state["batches"], state["done"], state["last_id"]) == (230, 6, True, 229)
    assert r["status"] == "success" and r["attempt"] and r["fence"] >= 1
    assert result.applied[0]["action"] == "apply"
    progress = [m for m in caplog.messages if "transform count" in m and "%" in m]
    assert progress and "ETA" in progress[0] and "/230" in progress[0]


def test_filter_guard_without_marker_leaves_documents_clean(adapter, mongo_url, tmp_path):
    client = pymongo.MongoClient(mongo_url)
    posts = client.get_default_database()["posts"]
    posts.insert_many([{"_id": i, "schemaVersion": 1 if i % 3 else 2, "author": {"first_name": "Ada", "last_name": str(i)}}
                       for i in range(60)])
    migs = write(tmp_path / "m", {"1-v2.py": textwrap.dedent('''
        def up(db, ctx):
            ctx.transform("posts", {"schemaVersion": 1},
                          lambda d: {"$set": {"schemaVersion": 2, "author.full_name": "Ada " + d["author"]["last_name"]},
                                     "$unset": {"author.first_name": "", "author.last_name": ""}},
                          marker=False, batch_size=7)
        ''')})
    migrate(adapter(), migs, ctx())
    assert posts.count_documents({"schemaVersion": 2}) == 60
    assert posts.count_documents({"_polymigrate": {"$exists": True}}) == 0
    assert posts.find_one({"_id": 4})["author"] == {"full_name": "Ada 4"}
    assert posts.find_one({"_id": 3})["author"] == {"first_name": "Ada", "last_name": "3"}  # was v2 already


def test_max_ops_per_sec_spreads_the_writes(adapter, mongo_url, tmp_path):
    coll = seed(mongo_url, 120)
    migs = write(tmp_path / "m", {"1-slow.py": textwrap.dedent('''
        def up(db, ctx):
            ctx.transform("items", {}, {"$set": {"v": 2}}, batch_size=20, max_ops_per_sec=200)
        ''')})
    started = time.monotonic()
    migrate(adapter(), migs, ctx())
    # 120 documents at 200/s: the throttle sleeps after each batch, so the run cannot be faster than that
    assert time.monotonic() - started >= 0.5
    assert coll.count_documents({"v": 2}) == 120


def test_a_stale_lock_holder_cannot_write_the_ledger(adapter, mongo_url, tmp_path):
    """The fence, step by step: A holds the lease, it expires, B takes it; A's checkpoint is refused."""
    migs = write(tmp_path / "m", {"1-count.py": COUNT_ONCE.replace("BATCH", "10")})
    a, b = adapter(lease_ms=800), adapter(lease_ms=800)
    a.read_ledger()
    with a.lock("alice run=1", 1):
        row_a, _ = a.ledger.start(migs[0], ctx(), a._lease.token)
        token_a = a._lease.token
        a._lease._stop.set()  # alice stops renewing, as if paused
        time.sleep(1.0)
        with b.lock("bob run=2", 5):
            assert b._lease.token == token_a + 1
            with pytest.raises(LeaseLost) as lost:
                a.ledger.update(row_a["_id"], token_a, {"progress.x": 1})
            assert "newer lock holder" in str(lost.value)
            with pytest.raises(LeaseLost) as lost:
                a._lease.assert_held("batch 7")
            assert "bob run=2" in str(lost.value) and "batch 7" in str(lost.value)
    assert "x" not in row(mongo_url)["progress"]


def test_pipeline_update_on_ferretdb_fails_naming_the_server(adapter, mongo_url, mongo_server, tmp_path):
    if not mongo_server.is_ferretdb:
        pytest.skip("FerretDB only: real MongoDB runs pipeline updates (test_pipeline_update_on_real_mongodb)")
    seed(mongo_url, 5)
    migs = write(tmp_path / "m", {"1-pipe.py": 'def up(db, ctx):\n    ctx.transform("items", {}, [{"$set": {"j": "$i"}}])\n'})
    with pytest.raises(PermanentError) as info:
        migrate(adapter(), migs, ctx())
    assert "aggregation pipeline" in str(info.value) and "FerretDB" in str(info.value)


def test_pipeline_update_on_real_mongodb(adapter, mongo_url, real_mongodb, tmp_path):
    coll = seed(mongo_url, 50)
    migs = write(tmp_path / "m", {"1-pipe.py": 'def up(db, ctx):\n    ctx.transform("items", {}, [{"$set": {"j": {"$multiply": ["$i", 3]}}}], batch_size=9)\n'})
    migrate(adapter(), migs, ctx())
    assert all(d["j"] == d["i"] * 3 for d in coll.find())


# --- crashes, for real, in a child process ----------------------------------------------------------

CHILD = '''
import os, signal, sys
from pathlib import Path
from pymongo.collection import Collection
from polymigrate.adapters.mongodb.adapter import MongoAdapter
from polymigrate.catalog import discover
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext

url, folder, mode, at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
original = Collection.bulk_write
calls = 0

def bulk_write(self, requests, **kw):
    global calls
    if self.name != "items":
        return original(self, requests, **kw)
    calls += 1
    if calls == at and mode == "half":
        original(self, requests[: max(len(requests) // 2, 1)], **kw)
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(self, requests, **kw)
    if calls == at and mode == "after-write":
        os.kill(os.getpid(), signal.SIGKILL)
    return result

Collection.bulk_write = bulk_write
migs = discover("shop", "mongodb", Path(folder)).applicable("mongodb")
adapter = MongoAdapter.from_url(url, domain="shop", lease_ms=1000)
migrate(adapter, migs, RunContext(domain="shop", actor="child", run_id="run-child", lock_wait_seconds=30))
print("finished")
'''


def _child(tmp_path: Path, url: str, folder: Path, mode: str, at: int) -> subprocess.CompletedProcess:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, str(script), url, str(folder), mode, str(at)], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("mode, update", [("after-write", COUNT_ONCE), ("half", COUNT_ONCE_PER_DOC)],
                         ids=["killed-between-writes-and-checkpoint", "killed-half-way-through-a-batch"])
def test_kill_9_at_the_worst_moment_then_rerun_changes_each_document_exactly_once(adapter, mongo_url, tmp_path,
                                                                                   mode, update):
    n, batch = 300, 40
    coll = seed(mongo_url, n)
    folder = tmp_path / "m"
    migs = write(folder, {"1-count.py": update.replace("BATCH", str(batch))})
    killed = _child(tmp_path, mongo_url, folder, mode, at=3)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = row(mongo_url)
    assert before["status"] == "started"
    checkpointed = before["progress"]["transforms"]["count"]["processed"]
    assert checkpointed == 2 * batch  # batch 3 was (partly) written but never checkpointed
    written = counts(coll).get(1, 0)
    assert written > checkpointed, "the kill should land after some writes of batch 3"

    time.sleep(1.2)  # the killed run's lease (1 s) expires; nothing releases it
    result = migrate(adapter(), migs, ctx(run_id="run-2"))
    assert result.applied[0]["action"] == "resume"
    assert counts(coll) == {1: n}  # every document exactly once
    after = row(mongo_url)
    assert after["status"] == "success" and after["attempt"] == before["attempt"]
    assert after["progress"]["transforms"]["count"]["processed"] == n


def test_kill_9_twice_at_random_moments_via_the_cli_then_rerun(mongo_url, tmp_path):
    """The acceptance scenario in small (FerretDB is slow; bench/ and the real-MongoDB test run 1M):
    `polymigrate migrate` killed with SIGKILL twice while it transforms, then run to the end."""
    n = 800
    coll = seed(mongo_url, n)
    folder = tmp_path / "m"
    write(folder, {"1-count.py": COUNT_ONCE.replace("BATCH", "40")})
    cmd = [sys.executable, "-c", "from polymigrate.cli import main; main()", "migrate", "--url",
           mongo_url + "?lease_ms=1000", "-l", str(folder), "-d", "shop", "--lock-wait", "30"]
    for kill_after in (1, 2):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = (row(mongo_url).get("progress") or {}).get("transforms", {}).get("count", {}).get("batches", 0)
            if done >= kill_after * 3 or proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert row(mongo_url)["status"] == "started"
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-2000:]
    assert counts(coll) == {1: n}
    assert row(mongo_url)["progress"]["transforms"]["count"]["processed"] == n


def test_a_holder_paused_past_its_lease_writes_nothing_after_another_run_took_over(mongo_url, tmp_path):
    """SIGSTOP the run while it transforms; a second run takes the lock and finishes; SIGCONT: the
    first run stops on its next write, and neither the documents nor the ledger change any more."""
    n = 600
    coll = seed(mongo_url, n)
    folder = tmp_path / "m"
    write(folder, {"1-count.py": COUNT_ONCE.replace("BATCH", "30").replace("batch_size=30", "batch_size=30, pause_ms=20")})
    cmd = [sys.executable, "-c", "from polymigrate.cli import main; main()", "migrate", "--url",
           mongo_url + "?lease_ms=1000", "-l", str(folder), "-d", "shop", "--lock-wait", "30"]
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while (row(mongo_url).get("progress") or {}).get("transforms", {}).get("count", {}).get("batches", 0) < 2:
            assert time.monotonic() < deadline and a.poll() is None, "the first run never got going"
            time.sleep(0.02)
        a.send_signal(signal.SIGSTOP)
        time.sleep(1.5)  # past its 1 s lease
        b = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert b.returncode == 0, b.stderr[-2000:]
        assert counts(coll) == {1: n}
        ledger_after_b, docs_after_b = row(mongo_url), fingerprint(coll)
        assert ledger_after_b["status"] == "success"
    finally:
        a.send_signal(signal.SIGCONT)
    out, err = a.communicate(timeout=120)
    assert a.returncode == 1, (out, err)
    assert "transient" in err and ("passed to" in err or "newer lock holder" in err or "refused" in err), err
    assert fingerprint(coll) == docs_after_b and counts(coll) == {1: n}
    assert row(mongo_url) == ledger_after_b


# --- the acceptance run: a million documents, on a real MongoDB -------------------------------------

def test_million_documents_kill_9_then_rerun_exactly_once(mongo_url, real_mongodb, tmp_path):
    """kill -9 during a 1,000,000-document transform, then rerun: every document changed once.
    On FerretDB this takes hours (see bench/bench_mongo_transform.py and docs/mongodb.md), so it runs
    when MONGO_URI is a real MongoDB; the same paths run above on a few hundred documents."""
    n = int(os.environ.get("POLYMIGRATE_MONGO_MILLION", "1000000"))
    coll = seed(mongo_url, n)
    folder = tmp_path / "m"
    write(folder, {"1-count.py": COUNT_ONCE.replace("BATCH", "1000")})
    cmd = [sys.executable, "-c", "from polymigrate.cli import main; main()", "migrate", "--url",
           mongo_url + "?lease_ms=2000", "-l", str(folder), "-d", "shop", "--lock-wait", "60"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while (row(mongo_url).get("progress") or {}).get("transforms", {}).get("count", {}).get("processed", 0) < n // 3:
        assert proc.poll() is None
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert final.returncode == 0, final.stderr[-2000:]
    assert coll.count_documents({"n": 1}) == n and coll.count_documents({"n": {"$ne": 1}}) == 0
    assert row(mongo_url)["progress"]["transforms"]["count"]["processed"] == n
