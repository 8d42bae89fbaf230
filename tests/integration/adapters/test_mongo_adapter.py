"""The MongoDB adapter on the server at MONGO_URI: JSON commands and their resume, what the server
lacks, the ledger's shape, errors naming file and line, undo, baseline, repair and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pymongo
import pytest

from polymigrate.adapters.mongodb.adapter import MongoAdapter
from polymigrate.catalog import discover
from polymigrate.errors import PermanentError, SpecError, TransientError
from polymigrate.executor import migrate, undo_to
from polymigrate.ledger import RunContext, Status

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-c", "from polymigrate.cli import main; main()"]


def ctx(**kw) -> RunContext:
    return RunContext(**{**dict(domain="shop", environment="testing", region="r1", actor="tester@host",
                                run_id="run-1", lock_wait_seconds=5, plan_hash="plan-abc"), **kw})


def write(folder: Path, files: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in files.items():
        (folder / name).write_text(body if isinstance(body, str) else json.dumps(body, indent=2), encoding="utf-8")
    cat = discover("shop", "mongodb", folder)
    assert not cat.problems, cat.problems
    return cat.applicable("mongodb")


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


CREATE = {"description": "customers", "commands": [
    {"create": "customers"},
    {"createIndexes": "customers", "indexes": [{"key": {"email": 1}, "name": "email_unique", "unique": True}]},
], "down": [{"drop": "customers"}]}


def test_ledger_rows_carry_flyway_fields_run_context_and_a_unique_version(adapter, mongo_url, tmp_path):
    migs = write(tmp_path / "m", {"1-customers.json": CREATE})
    a = adapter()
    migrate(a, migs, ctx())
    (e,) = a.read_ledger()
    assert (e.installed_rank, e.version, e.description, e.type, e.script) == (1, "1", "customers", "MONGO_JSON", "1-customers.json")
    assert (e.checksum, e.sha256) == (migs[0].checksum, migs[0].sha256) and len(e.sha256) == 64
    assert (e.run_id, e.environment, e.region, e.plan_hash, e.installed_by) == ("run-1", "testing", "r1", "plan-abc", "tester@host")
    assert e.success and e.status is Status.SUCCESS and e.execution_time >= 0 and e.installed_on is not None
    coll = a.db["polymigrate_schema_history"]
    index = coll.index_information()["domain_version_unique"]
    assert index["unique"] and index["key"] == [("domain", 1), ("version", 1)]
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        coll.insert_one({"domain": "shop", "version": "1"})


def test_a_failing_command_names_file_line_and_where_a_retry_resumes(adapter, mongo_url, tmp_path):
    files = {"1-customers.json": CREATE, "2-seed.json": {"commands": [
        {"insert": "customers", "documents": [{"_id": 1, "email": "a@x"}]},
        {"insert": "customers", "documents": [{"_id": 2, "email": "taken@x"}]},
        {"insert": "customers", "documents": [{"_id": 3, "email": "c@x"}]},
    ]}}
    migs = write(tmp_path / "m", files)
    a = adapter()
    a.db.create_collection("customers")
    a.db.customers.create_index("email", unique=True, name="email_unique")
    a.db.customers.insert_one({"_id": 99, "email": "taken@x"})
    migs = [m for m in migs if m.script == "2-seed.json"]
    with pytest.raises(PermanentError) as info:
        migrate(a, migs, ctx())
    text = str(info.value)
    assert "2-seed.json:13" in text and "command 2 of 3 (insert) failed (1 done and recorded" in text
    assert "retry resumes at command 2" in text and "unique index" in text
    (row,) = a.read_ledger()
    assert row.status is Status.FAILED and row.progress["commands_done"] == 1
    a.db.customers.delete_one({"_id": 99})  # the person fixes the data, then retries
    result = migrate(a, migs, ctx(run_id="run-2"))
    assert result.applied[0]["action"] == "resume"
    assert sorted(d["_id"] for d in a.db.customers.find()) == [1, 2, 3]  # command 1 did not run twice


def test_a_command_that_took_effect_before_the_kill_counts_as_done_on_resume(adapter, tmp_path):
    migs = write(tmp_path / "m", {"1-customers.json": CREATE})
    a = adapter()
    a.read_ledger()
    with a.lock("killed run", 1):
        a.ledger.start(migs[0], ctx(run_id="run-killed"), a._lease.token)  # 'started', nothing checkpointed
    a.db.create_collection("customers")  # …but its first command had run when the process died
    result = migrate(a, migs, ctx(run_id="run-2"))
    assert result.applied[0]["action"] == "resume"
    assert "email_unique" in a.db.customers.index_information()
    assert a.read_ledger()[0].status is Status.SUCCESS


def test_short_collection_names_in_rename_mean_this_database(adapter, tmp_path):
    migs = write(tmp_path / "m", {"1-customers.json": CREATE, "2-rename.json": {"commands": [
        {"renameCollection": "customers", "to": "clients"}], "down": [{"renameCollection": "clients", "to": "customers"}]}})
    a = adapter()
    migrate(a, migs, ctx())
    assert "clients" in a.db.list_collection_names() and "customers" not in a.db.list_collection_names()
    undo_to(a, migs, ctx(), "1")
    assert "customers" in a.db.list_collection_names()


VALIDATOR = {"description": "needs collMod", "commands": [
    {"collMod": "customers", "validator": {"$jsonSchema": {"required": ["email"]}}, "validationLevel": "moderate"}]}


def test_a_command_ferretdb_lacks_stops_the_run_before_anything_runs(adapter, tmp_path, mongo_server):
    if not mongo_server.is_ferretdb:
        pytest.skip("FerretDB only; on a real MongoDB the same files apply (next test)")
    migs = write(tmp_path / "m", {"1-customers.json": CREATE, "2-validator.json": VALIDATOR})
    a = adapter()
    for dry_run in (True, False):
        with pytest.raises(PermanentError) as info:
            migrate(a, migs, ctx(), dry_run=dry_run)
        text = str(info.value)
        assert "2-validator.json:5" in text and "`collMod` is not supported by FerretDB 1.24.2" in text
        assert "mongo:7" in text  # the fix: where a real MongoDB comes from
        assert a.read_ledger() == [] and "customers" not in a.db.list_collection_names()


def test_the_same_files_apply_on_real_mongodb(adapter, tmp_path, real_mongodb):
    migs = write(tmp_path / "m", {"1-customers.json": CREATE, "2-validator.json": VALIDATOR})
    a = adapter()
    migrate(a, migs, ctx())
    opts = a.db.command("listCollections", filter={"name": "customers"})["cursor"]["firstBatch"][0]["options"]
    assert opts["validator"] == {"$jsonSchema": {"required": ["email"]}}


def test_python_migrations_fail_before_anything_runs_when_they_cannot_load(adapter, tmp_path):
    a = adapter()
    syntax = write(tmp_path / "a", {"1-customers.json": CREATE, "2-broken.py": "def up(db, ctx)\n    pass\n"})
    with pytest.raises(SpecError) as info:
        migrate(a, syntax, ctx())
    assert info.value.problems[0].line == 1 and "syntax" in info.value.problems[0].message
    missing = write(tmp_path / "b", {"1-customers.json": CREATE,
                                     "2-needs.py": "import slugify_not_installed_here\n\ndef up(db, ctx):\n    pass\n"})
    with pytest.raises(SpecError) as info:
        migrate(a, missing, ctx())
    assert "slugify_not_installed_here" in str(info.value) and info.value.problems[0].line == 1
    assert a.read_ledger() == [] and "customers" not in a.db.list_collection_names()


def test_a_python_error_names_the_line_and_up_db_alone_works(adapter, tmp_path):
    migs = write(tmp_path / "m", {
        "1-plain.py": "def up(db):\n    db.customers.insert_one({'_id': 1})\n",
        "2-fails.py": "def up(db, ctx):\n    db.customers.insert_one({'_id': 2})\n    raise ValueError('bad tier table')\n",
    })
    a = adapter()
    with pytest.raises(PermanentError) as info:
        migrate(a, migs, ctx())
    assert "2-fails.py:3" in str(info.value) and "ValueError: bad tier table" in str(info.value)
    assert {e.script: e.status for e in a.read_ledger()} == {"1-plain.py": Status.SUCCESS, "2-fails.py": Status.FAILED}


def test_unreachable_server_is_transient(tmp_path):
    a = MongoAdapter.from_url("mongodb://127.0.0.1:9/shop?serverSelectionTimeoutMS=300", domain="shop")
    try:
        with pytest.raises(TransientError) as info:
            a.read_ledger()
        assert "127.0.0.1:9" in str(info.value)
    finally:
        a.close()


def test_baseline_then_repair_a_changed_file(adapter, tmp_path):
    folder = tmp_path / "m"
    migs = write(folder, {"1-customers.json": CREATE, "2-seed.json": {"commands": [
        {"insert": "customers", "documents": [{"_id": 1, "email": "a@x"}]}]}})
    a = adapter()
    a.baseline("1", "adopted", ctx())
    result = migrate(a, migs, ctx())
    assert [x["script"] for x in result.applied] == ["2-seed.json"]  # 1 is below the baseline
    (folder / "2-seed.json").write_text((folder / "2-seed.json").read_text().replace("{", "{\n  \"description\": \"seed\",", 1))
    changed = discover("shop", "mongodb", folder).applicable("mongodb")
    with pytest.raises(PermanentError, match="repair"):
        migrate(a, changed, ctx())
    report = a.repair(changed, ctx())
    assert report.realigned == ["2-seed.json"]
    assert migrate(a, changed, ctx()).applied == []


def test_snapshot_shows_collections_and_indexes_but_not_the_ledger(adapter, tmp_path):
    a = adapter()
    migrate(a, write(tmp_path / "m", {"1-customers.json": CREATE}), ctx())
    snap = a.snapshot()
    assert [c["name"] for c in snap["collections"]] == ["customers"]
    assert {"name": "email_unique", "key": {"email": 1}, "unique": True} in snap["collections"][0]["indexes"]
    assert snap["server"]


def test_cli_migrate_status_undo_ad_hoc(mongo_url, tmp_path):
    folder = tmp_path / "m"
    write(folder, {"1-customers.json": CREATE, "2-seed.py": "def up(db, ctx):\n    db.customers.insert_one({'_id': 1})\n\n"
                                                             "def down(db, ctx):\n    db.customers.delete_one({'_id': 1})\n"})
    base = ["--url", mongo_url, "-l", str(folder), "-d", "shop"]
    dry = subprocess.run([*CLI, "migrate", "--dry-run", *base], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and "2 would apply" in dry.stdout
    run = subprocess.run([*CLI, "migrate", *base], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "2 applied, now at 2" in run.stdout, run.stderr
    status = subprocess.run([*CLI, "status", *base], capture_output=True, text=True, timeout=120)
    assert status.stdout.count("success") == 2
    undo = subprocess.run([*CLI, "undo", "--to", "1", *base], capture_output=True, text=True, timeout=120)
    assert undo.returncode == 0 and "1 undone, now at 1" in undo.stdout, undo.stderr
    status = subprocess.run([*CLI, "status", *base], capture_output=True, text=True, timeout=120)
    assert "undone" in status.stdout
    client = pymongo.MongoClient(mongo_url)
    assert client.get_default_database().customers.count_documents({}) == 0
    client.close()


def test_airflow_style_mongo_uri_from_an_environment_connection(mongo_url):
    """AIRFLOW_CONN_<ID>=mongo://host:port/db (conn_type 'mongo') is what the CLI's spec mode gets."""
    a = MongoAdapter.from_url(mongo_url.replace("mongodb://", "mongo://", 1), domain="shop")
    try:
        assert a.read_ledger() == [] and a.target.startswith("mongodb://")
    finally:
        a.close()


def test_a_connection_that_names_a_database_wins_over_the_domains_setting(make_mongo_database, tmp_path):
    """Issue 22.2: every environment and region names its own database in its connection; the domain's
    ``mongodb.database`` put them all into one (one ledger: staging looked rehearsed because development
    ran). The domain's name now applies only where the connection names none."""
    from types import SimpleNamespace

    from urllib.parse import urlsplit

    from tests.conftest import mongo_url_for

    development, staging = make_mongo_database(), make_mongo_database()
    settings = SimpleNamespace(database="shop_everywhere", ledger=None)
    files = write(tmp_path / "m", {"1-customers.json": json.dumps(CREATE)})
    dev = MongoAdapter.from_url(development, domain="shop", settings=settings)
    stg = MongoAdapter.from_url(staging, domain="shop", settings=settings)
    bare = MongoAdapter.from_url(mongo_url_for(""), domain="shop", settings=settings)
    try:
        assert (dev.db.name, stg.db.name) == (urlsplit(development).path[1:], urlsplit(staging).path[1:])
        assert bare.db.name == "shop_everywhere"  # the connection names none: the domain's setting
        migrate(dev, files, ctx())
        assert [e.version for e in dev.read_ledger()] == ["1"] and stg.read_ledger() == []
    finally:
        for a in (dev, stg, bare):
            a.close()


def test_undo_of_a_json_file_without_down_names_its_down_key(adapter, tmp_path):
    """Issue 28 item 6: a `.json` file carries its undo under "down", not in a down() function."""
    no_down = {"description": "customers", "commands": [{"create": "customers"}]}
    migs = write(tmp_path / "m", {"1-customers.json": no_down})
    a = adapter()
    migrate(a, migs, ctx())
    with pytest.raises(PermanentError) as info:
        undo_to(a, migs, ctx(run_id="run-2"), "0")
    text = str(info.value)
    assert '"down" key' in text and "down()" not in text and "U1__…" in text and ".json" in text, text
    assert "repair" not in text, text
