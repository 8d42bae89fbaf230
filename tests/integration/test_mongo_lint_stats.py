"""MongoDB lint with collection statistics from the server at MONGO_URI (read only)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pymongo
import pytest

from polymigrate.catalog import discover
from polymigrate.lint import lint_catalog
from tests.conftest import SPECS

pytestmark = pytest.mark.integration


def _catalog(tmp_path, files):
    folder = tmp_path / "mongodb"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return discover("shop", "mongodb", folder)


def _index(coll):
    return json.dumps({"commands": [{"createIndexes": coll, "indexes": [{"key": {"v": 1}, "name": "v"}]}]}, indent=2)


@pytest.fixture
def db(mongo_url):
    client = pymongo.MongoClient(mongo_url)
    database = client.get_default_database()
    database.big.insert_many([{"v": i} for i in range(12_000)])
    database.small.insert_many([{"v": i} for i in range(10)])
    yield database
    client.close()


def test_index_builds_and_whole_collection_writes_are_scored_by_collection_size(db, tmp_path):
    cat = _catalog(tmp_path, {
        "1-big.json": _index("big"), "2-small.json": _index("small"), "3-missing.json": _index("nowhere"),
        "4-wipe.js": "module.exports = { async up(db) { await db.collection('small').deleteMany({}); } };\n",
    })
    report = lint_catalog(cat, mongo=db, collisions_check=False)
    got = {f.file.rsplit("/", 1)[-1]: (f.severity, f.message) for f in report.findings}
    assert report.connected
    assert got["1-big.json"][0] == "medium" and "~12,000 documents of big" in got["1-big.json"][1]
    assert got["2-small.json"][0] == "low" and "~10 documents of small" in got["2-small.json"][1]
    assert got["3-missing.json"][0] == "medium" and "nowhere not found" in got["3-missing.json"][1]  # fails closed
    assert got["4-wipe.js"][0] == "low"
    offline = {f.file.rsplit("/", 1)[-1]: f.severity for f in lint_catalog(cat, collisions_check=False).findings}
    assert offline == {"1-big.json": "medium", "2-small.json": "medium", "3-missing.json": "medium", "4-wipe.js": "high"}


VALIDATOR = json.dumps({"commands": [{"collMod": "small", "validator": {"$jsonSchema": {"required": ["w"]}},
                                      "validationLevel": "strict"}]}, indent=2)


def test_validator_change_counts_documents_that_would_break_on_real_mongodb(db, tmp_path, real_mongodb):
    report = lint_catalog(_catalog(tmp_path, {"1-val.json": VALIDATOR}), mongo=db, collisions_check=False)
    (f,) = report.findings
    assert f.severity == "high" and "10 documents of small do not match" in f.message
    db.small.update_many({}, {"$set": {"w": 1}})
    (f,) = lint_catalog(_catalog(tmp_path / "b", {"1-val.json": VALIDATOR}), mongo=db, collisions_check=False).findings
    assert f.severity == "low" and "conform" in f.message


def test_validator_change_on_a_server_that_cannot_count_keeps_its_default(db, tmp_path, mongo_server):
    if not mongo_server.is_ferretdb:
        pytest.skip("FerretDB only (it has no $jsonSchema queries); real MongoDB counts, see the test above")
    (f,) = lint_catalog(_catalog(tmp_path, {"1-val.json": VALIDATOR}), mongo=db, collisions_check=False).findings
    assert f.severity == "medium" and "could not count" in f.message


@pytest.mark.parametrize("scheme", ["mongodb", "mongo"])  # mongo:// is Airflow's connection URI for MongoDB
def test_cli_lint_url_mongodb_reads_each_domains_database(mongo_url, tmp_path, scheme):
    specs = tmp_path / "specs"
    shutil.copytree(SPECS, specs)
    client = pymongo.MongoClient(mongo_url)
    dbname = client.get_default_database().name
    (specs / "social-commerce" / "domain.yaml").write_text(
        (specs / "social-commerce" / "domain.yaml").read_text().replace("database: social_commerce", f"database: {dbname}"))
    client[dbname].activity_feed.insert_many([{"at": i} for i in range(20)])
    # an index build the samples do not have (theirs say background): the finding scores by the live count
    (specs / "social-commerce" / "mongodb" / "collections" / "6-feed-by-kind.json").write_text(json.dumps(
        {"phase": "contract",  # after the full_name release's contract files
         "commands": [{"createIndexes": "activity_feed", "indexes": [{"key": {"kind": 1}, "name": "by_kind"}]}]}))
    proc = subprocess.run([sys.executable, "-c", "from polymigrate.cli import main; main()", "lint", str(specs),
                           "-d", "social-commerce", "--url", scheme + mongo_url[mongo_url.index("://"):], "--json"], capture_output=True, text=True,
                          timeout=120)
    report = json.loads(proc.stdout)["domains"]["social-commerce"]
    ttl = [f for f in report["findings"] if f["rule"] == "mongodb-index-without-background" and "6-feed" in f["file"]]
    assert ttl and ttl[0]["severity"] == "low" and "~20 documents of activity_feed" in ttl[0]["message"]
    client.close()
