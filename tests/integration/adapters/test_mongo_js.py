"""migrate-mongo ``.js`` migrations through Node, and adoption of a migrate-mongo project, on the
server at MONGO_URI. migrate-mongo itself (npm, `scripts/engines.sh up node`) is the oracle."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymongo
import pytest

from polymigrate.adapters.mongodb import js as mongo_js
from polymigrate.adapters.mongodb.adapter import MongoAdapter
from polymigrate.catalog import discover
from polymigrate.errors import PermanentError, SpecError, ValidationFailed
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext, Status
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.engine("node")]
PROJECT = Path(__file__).with_name("migrate_mongo_project")
OWN = {"changelog", "changelog_lock", "polymigrate_schema_history", "polymigrate_schema_history_lock"}


def _migrate_mongo() -> Path:
    modules = mongo_js.node_modules()
    if not modules or not (Path(modules) / "migrate-mongo" / "bin" / "migrate-mongo.js").exists():
        pytest.skip("migrate-mongo is not installed: bash scripts/engines.sh up node")
    return Path(modules) / "migrate-mongo" / "bin" / "migrate-mongo.js"


def ctx(**kw) -> RunContext:
    return RunContext(**{**dict(domain="shop", environment="testing", region="r1", actor="tester@host",
                                run_id="run-1", lock_wait_seconds=10), **kw})


def migrations(folder: Path):
    cat = discover("shop", "mongodb", folder)
    assert not cat.problems, cat.problems
    return cat.applicable("mongodb")


def seed(db) -> None:
    """The same data migrate-mongo's run and polymigrate's run start from."""
    customers, notes, orders = [], [], []
    for i in range(1, 121):
        customers.append({"_id": i, "email": f"customer{i}@example.com", "name": f"Customer {i}",
                          "address": {"street": f"{i} Main St", "zip": str(10000 + i), "city": "Lyon" if i % 2 else "Tunis"},
                          "lifetime_spend": (i * 37) % 1200, "legacy_flags": ["vip"] if i % 5 == 0 else []})
        if i % 3 == 0:
            notes.append({"_id": i, "customer_id": i, "text": f"called on day {i}"})
        for k in range(3):
            orders.append({"_id": i * 10 + k, "customer_id": i, "status": ["new", "paid", "shipped"][(i + k) % 3],
                           "total": (i * 7 + k) % 300, "test": i > 115})
    db.customers.insert_many(customers)
    db.cust_notes.insert_many(notes)
    db.orders.insert_many(orders)
    db.customers.create_index("name", name="by_name")


def state(db) -> dict:
    """Collections, their indexes and documents: what must be equal after either tool ran."""
    out = {}
    for name in sorted(set(db.list_collection_names()) - OWN):
        indexes = sorted((ix["name"], tuple(ix["key"].items()), bool(ix.get("unique"))) for ix in db[name].list_indexes())
        out[name] = {"indexes": indexes, "documents": list(db[name].find({}).sort("_id", 1))}
    return out


def run_migrate_mongo(url: str, database: str, *args: str, file_hash: bool = False, cwd: Path = PROJECT):
    env = {**os.environ, "MM_URL": url, "MM_DB": database, "MM_FILE_HASH": "true" if file_hash else "false"}
    proc = subprocess.run(["node", str(_migrate_mongo()), *args, "-f", "migrate-mongo-config.js"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture
def two_databases(make_mongo_database):
    urls = [make_mongo_database("pm_mm"), make_mongo_database("pm_pm")]
    clients = [pymongo.MongoClient(u) for u in urls]
    dbs = [c.get_default_database() for c in clients]
    yield urls, dbs
    for c in clients:
        c.close()


def test_a_migrate_mongo_project_gives_the_same_result_under_both_tools(two_databases):
    (mm_url, pm_url), (mm_db, pm_db) = two_databases
    seed(mm_db)
    seed(pm_db)
    base = mm_url.rsplit("/", 1)[0]
    out = run_migrate_mongo(base, mm_db.name, "up")
    assert out.count("MIGRATED UP") == 4, out

    a = MongoAdapter.from_url(pm_url, domain="shop")
    try:
        result = migrate(a, migrations(PROJECT / "migrations"), ctx())
    finally:
        a.close()
    assert len(result.applied) == 4
    mm, pm = state(mm_db), state(pm_db)
    assert sorted(mm) == sorted(pm) == ["customer_notes", "customers", "orders"]
    assert mm == pm
    assert pm["customers"]["documents"][4]["loyalty"] == {"tier": "bronze", "since": pm["customers"]["documents"][4]["loyalty"]["since"], "vip": True}
    assert ("email_unique", (("email", 1),), True) in pm["customers"]["indexes"]
    assert len(pm["orders"]["documents"]) == 115 * 3


@pytest.mark.parametrize("file_hash", [False, True], ids=["changelog", "changelog-with-fileHash"])
def test_after_importing_the_changelog_polymigrate_applies_nothing(two_databases, tmp_path, file_hash):
    (mm_url, _), (mm_db, _) = two_databases
    seed(mm_db)
    base = mm_url.rsplit("/", 1)[0]
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    (project / "migrations" / "20240415083000-orders-status-index-and-cleanup.js").rename(
        project / "later.js.txt")  # migrate-mongo applies three; the fourth arrives with the adoption
    run_migrate_mongo(base, mm_db.name, "up", file_hash=file_hash, cwd=project)
    before = state(mm_db)
    shutil.move(project / "later.js.txt", project / "migrations" / "20240415083000-orders-status-index-and-cleanup.js")

    cli = [sys.executable, "-c", "from polymigrate.cli import main; main()"]
    imported = subprocess.run([*cli, "migrate-mongo-import", "--url", mm_url, "-l", str(project / "migrations"),
                               "-d", "shop", "--collection", "changelog"], capture_output=True, text=True, timeout=120)
    assert imported.returncode == 0, imported.stderr
    assert "imported 3 applied migration(s)" in imported.stdout
    again = subprocess.run([*cli, "migrate-mongo-import", "--url", mm_url, "-l", str(project / "migrations"),
                            "-d", "shop"], capture_output=True, text=True, timeout=120)
    assert "imported 0" in again.stdout and "3 already in the ledger" in again.stdout

    a = MongoAdapter.from_url(mm_url, domain="shop")
    try:
        dry = migrate(a, migrations(project / "migrations"), ctx(), dry_run=True)
        assert [x["script"] for x in dry.applied] == ["20240415083000-orders-status-index-and-cleanup.js"]
        assert state(mm_db) == before  # importing changed no data
        rows = {e.version: e for e in a.read_ledger()}
        assert rows["20240105093000"].installed_by == "migrate-mongo" and rows["20240105093000"].status is Status.SUCCESS
        result = migrate(a, migrations(project / "migrations"), ctx(run_id="run-2"))
        assert [x["script"] for x in result.applied] == ["20240415083000-orders-status-index-and-cleanup.js"]
        assert migrate(a, migrations(project / "migrations"), ctx(run_id="run-3")).applied == []
    finally:
        a.close()


def test_a_file_changed_after_migrate_mongo_applied_it_stops_the_run_until_repair(two_databases, tmp_path):
    (mm_url, _), (mm_db, _) = two_databases
    seed(mm_db)
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project)
    run_migrate_mongo(mm_url.rsplit("/", 1)[0], mm_db.name, "up", file_hash=True, cwd=project)
    edited = project / "migrations" / "20240212101500-rename-address-fields.js"
    edited.write_text(edited.read_text().replace("everywhere", "in every customer"))
    a = MongoAdapter.from_url(mm_url, domain="shop")
    try:
        migs = migrations(project / "migrations")
        report = a.import_migrate_mongo(ctx(), migs)
        assert report.changed == ["20240212101500-rename-address-fields.js"] and len(report.imported) == 4
        with pytest.raises(ValidationFailed) as info:
            migrate(a, migs, ctx())
        assert "20240212101500-rename-address-fields.js" in str(info.value) and "repair" in str(info.value)
    finally:
        a.close()


def test_a_missing_module_fails_before_anything_runs_naming_it(mongo_url, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "1-create.json").write_text('{"commands": [{"create": "customers"}]}')
    (folder / "2-slugs.js").write_text("const fs = require('fs');\n"
                                       "const slugify = require('slugify-not-installed-here');\n\n"
                                       "module.exports = { async up(db) { await db.collection('customers').insertOne({ s: slugify('A b') }); } };\n")
    a = MongoAdapter.from_url(mongo_url, domain="shop")
    try:
        with pytest.raises(SpecError) as info:
            migrate(a, migrations(folder), ctx())
        problem = info.value.problems[0]
        assert "slugify-not-installed-here" in problem.message and problem.line == 2
        assert problem.file.endswith("2-slugs.js") and "npm install" in (problem.hint or "")
        assert "customers" not in a.db.list_collection_names()  # file 1 did not run either
        assert a.read_ledger() == []
    finally:
        a.close()


def test_a_failing_js_migration_names_file_and_line_and_is_recorded_failed(mongo_url, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "1-dup.js").write_text("module.exports = {\n  async up(db) {\n"
                                     "    await db.collection('c').insertOne({ _id: 1 });\n"
                                     "    await db.collection('c').insertOne({ _id: 1 });\n  },\n};\n")
    (folder / "2-noexport.js").write_text("// forgot module.exports\nasync function up(db) {}\n")
    a = MongoAdapter.from_url(mongo_url, domain="shop")
    try:
        with pytest.raises(PermanentError) as info:
            migrate(a, migrations(folder), ctx())
        assert "1-dup.js:4" in str(info.value) and "duplicate key" in str(info.value).lower()
        assert a.read_ledger()[0].status is Status.FAILED
        (folder / "1-dup.js").write_text("module.exports = { async up(db) { await db.collection('c').insertOne({ _id: 2 }); } };\n")
        a.repair(migrations(folder), ctx())
        with pytest.raises(PermanentError) as info:
            migrate(a, migrations(folder), ctx())
        assert "2-noexport.js" in str(info.value) and "exports no up()" in str(info.value)
    finally:
        a.close()


CHILD = '''
import sys
from pathlib import Path
from polymigrate.adapters.mongodb.adapter import MongoAdapter
from polymigrate.catalog import discover
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext
url, folder = sys.argv[1], sys.argv[2]
a = MongoAdapter.from_url(url, domain="shop", lease_ms=int(sys.argv[3]) if len(sys.argv) > 3 else 1000)
migrate(a, discover("shop", "mongodb", Path(folder)).applicable("mongodb"),
        RunContext(domain="shop", actor="child", run_id="run-a", lock_wait_seconds=30))
'''


def test_a_js_migration_stops_when_its_paused_parent_lost_the_lock(mongo_url, tmp_path):
    """The Node child keeps running when its Python parent is SIGSTOPped; it watches the lease and
    exits before writing once another run holds the lock."""
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "1-slow.js").write_text("module.exports = { async up(db) {\n"
                                      "  await new Promise((r) => setTimeout(r, 4000));\n"
                                      "  await db.collection('events').insertOne({ by: process.pid });\n} };\n")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    parent = subprocess.Popen([sys.executable, str(script), mongo_url, str(folder)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = pymongo.MongoClient(mongo_url)
    ledger = client.get_default_database()["polymigrate_schema_history"]
    try:
        deadline = time.monotonic() + 60
        while ledger.find_one({"_id": "shop:1"}) is None:
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        parent.send_signal(signal.SIGSTOP)
        time.sleep(1.3)  # past the parent's 1 s lease; its Node child is still waiting in up()
        b = MongoAdapter.from_url(mongo_url, domain="shop")
        try:
            result = migrate(b, migrations(folder), ctx(run_id="run-b"))
            assert [x["action"] for x in result.applied] == ["resume"]
        finally:
            b.close()
        time.sleep(4.5)  # the paused run's Node child would have written by now
        assert client.get_default_database()["events"].count_documents({}) == 1
    finally:
        parent.send_signal(signal.SIGCONT)
        parent.communicate(timeout=60)
        client.close()
    assert parent.returncode != 0


def test_kill_9_of_the_run_stops_its_node_child_before_it_writes(mongo_url, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "1-slow.js").write_text("module.exports = { async up(db) {\n"
                                      "  await new Promise((r) => setTimeout(r, 3000));\n"
                                      "  await db.collection('events').insertOne({ orphan: true });\n} };\n")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "include"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # a 60 s lease: the child must stop because its parent died, not because the lease ran out
    parent = subprocess.Popen([sys.executable, str(script), mongo_url, str(folder), "60000"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = pymongo.MongoClient(mongo_url)
    db = client.get_default_database()
    try:
        deadline = time.monotonic() + 60
        while db["polymigrate_schema_history"].find_one({"_id": "shop:1"}) is None:
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        time.sleep(0.5)  # the Node child is running up()
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        time.sleep(4)
        assert db["events"].count_documents({}) == 0
        assert db["polymigrate_schema_history"].find_one({"_id": "shop:1"})["status"] == "started"
    finally:
        client.close()
