"""Declared MongoDB collections → generated command files, applied by the project's own adapter on the
real server (FerretDB from ``make engines``, or the MongoDB at MONGO_URI): the database ends equal to
the declaration, a second diff is empty, lint reads every generated file, undo goes back."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pymongo
import pytest
from typer.testing import CliRunner

from polymigrate.catalog import discover
from polymigrate.cli import app
from polymigrate.lint.engine import lint_file
from polymigrate.schemadiff import NamingContext
from polymigrate.schemadiff.mongodb import generate, read_declared, read_live

pytestmark = pytest.mark.integration

OLD = {"description": "posts as they were", "commands": [
    {"create": "posts"},
    {"createIndexes": "posts", "indexes": [
        {"key": {"author.user_id": 1, "created_at": -1}, "name": "author_recent"},
        {"key": {"schemaVersion": 1}, "name": "schema_version"},
        {"key": {"slug": 1}, "name": "slug"},
    ]},
], "down": [{"drop": "posts"}]}

POSTS = """\
    # posts: what the application queries today
    indexes:
      - name: author_recent          # now newest first per author *and* kind
        key: {author.user_id: 1, kind: 1, created_at: -1}
      - {name: slug, key: {slug: 1}, unique: true}
      - key: {tags: 1}               # unnamed: MongoDB's own name, tags_1
"""
FEED = """\
    indexes:
      - {name: user_recent, key: {user_id: 1, at: -1}}
"""


def declare(folder: Path, files: dict[str, str]) -> Path:
    schema = folder / "mongodb" / "schema"
    schema.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (schema / name).write_text(textwrap.dedent(text))
    return folder


def migrate(url: str, locations: Path, *args: str):
    out = CliRunner().invoke(app, [*args, "--url", url, "--locations", str(locations), "-d", "shop"])
    assert out.exit_code == 0, out.output + (out.stderr or "")
    return out


def live(url: str, names) -> dict:
    client = pymongo.MongoClient(url)
    try:
        return read_live(client.get_default_database(), list(names))
    finally:
        client.close()


def write(result, folder: Path) -> list[Path]:
    paths = []
    for f in result.files:
        (folder / f.name).write_text(f.text)
        paths.append(folder / f.name)
    return paths


def lint_of(folder: Path, name: str) -> set[str]:
    migration = next(m for m in discover("shop", "mongodb", folder).migrations["mongodb"] if m.path.name == name)
    return {f.rule for f in lint_file(migration).findings}


def test_from_empty_the_generated_file_creates_the_declared_collections(mongo_url, tmp_path):
    domain = declare(tmp_path / "shop", {"posts.yaml": POSTS, "activity_feed.yaml": FEED})
    migrations = tmp_path / "shop" / "mongodb"
    naming = NamingContext(migrations, "1", "declared collections")

    result = generate(mongo_url, domain, naming=naming)
    assert [f.name for f in result.files] == ["1-declared-collections.json"] and not result.refusals
    doc = json.loads(result.files[0].text)
    assert [next(iter(c)) for c in doc["commands"]] == ["create", "createIndexes", "create", "createIndexes"]
    assert doc["down"] == [{"drop": "posts"}, {"drop": "activity_feed"}]
    write(result, migrations)
    found = discover("shop", "mongodb", migrations)
    assert found.problems == [] and found.notes == []  # schema/ is the declared state, not migrations
    lint_of(migrations, "1-declared-collections.json")  # lint reads it (collections it creates are empty: low)

    migrate(mongo_url, migrations, "migrate")
    want = read_declared(domain)
    assert live(mongo_url, want) == want
    assert live(mongo_url, want)["posts"]["indexes"]["tags_1"]["key"] == {"tags": 1}
    assert generate(mongo_url, domain, naming=NamingContext(migrations, "2", "again")).empty


def test_from_an_older_state_indexes_are_dropped_changed_and_added_and_undo_goes_back(mongo_url, tmp_path):
    migrations = tmp_path / "shop" / "mongodb"
    migrations.mkdir(parents=True)
    (migrations / "1-posts.json").write_text(json.dumps(OLD))
    migrate(mongo_url, migrations, "migrate")
    before = live(mongo_url, ["posts"])
    domain = declare(tmp_path / "shop", {"posts.yaml": POSTS})

    result = generate(mongo_url, domain, naming=NamingContext(migrations, "2", "posts by kind"))
    assert len(result.files) == 1 and not result.refusals
    generated = result.files[0]
    doc = json.loads(generated.text)
    # drops first (a changed index keeps its name), then one build of everything new or changed
    assert doc["commands"][:3] == [{"dropIndexes": "posts", "index": "author_recent"},
                                   {"dropIndexes": "posts", "index": "schema_version"},
                                   {"dropIndexes": "posts", "index": "slug"}]
    assert [ix["name"] for ix in doc["commands"][3]["indexes"]] == ["author_recent", "slug", "tags_1"]
    notes = " | ".join(generated.notes)
    assert "posts.author_recent: changed (key" in notes and "posts.slug: changed (unique None → True)" in notes
    assert "posts.schema_version: dropped (not declared)" in notes
    write(result, migrations)
    assert "mongodb-drop-index" in lint_of(migrations, generated.name)

    migrate(mongo_url, migrations, "migrate")
    want = read_declared(domain)
    assert live(mongo_url, want) == want
    assert generate(mongo_url, domain, naming=NamingContext(migrations, "3", "again")).empty

    migrate(mongo_url, migrations, "undo", "--to", "1")  # the generated down
    assert live(mongo_url, ["posts"]) == before


def test_desired_may_be_another_database(make_mongo_database, tmp_path):
    a, b = make_mongo_database(), make_mongo_database()
    one = tmp_path / "a"
    one.mkdir()
    (one / "1-posts.json").write_text(json.dumps(OLD))
    migrate(b, one, "migrate")
    result = generate(a, b, naming=NamingContext(None, "1", "like b"))
    out = tmp_path / "out"
    out.mkdir()
    write(result, out)
    migrate(a, out, "migrate")
    assert live(a, ["posts"]) == live(b, ["posts"])


def test_what_ferretdb_cannot_run_is_refused_by_name_and_the_rest_still_applies(mongo_url, mongo_server, tmp_path):
    if not mongo_server.is_ferretdb:
        pytest.skip(f"FerretDB's limits; MONGO_URI is {mongo_server.label}")
    domain = declare(tmp_path / "shop", {"events.yaml": """\
        indexes:
          - {name: user_recent, key: {user_id: 1, at: -1}}
          - {name: expire_90_days, key: {at: 1}, expireAfterSeconds: 7776000}
        validator: {$jsonSchema: {bsonType: object, required: [user_id]}}
        validationLevel: moderate
    """})
    migrations = tmp_path / "shop" / "mongodb"
    result = generate(mongo_url, domain, naming=NamingContext(migrations, "1", "events"))
    assert len(result.refusals) == 2
    assert "events: validator not generated: `create` with `validator`" in result.refusals[0]
    assert "FerretDB" in result.refusals[0] and "real MongoDB" in result.refusals[0]
    assert "events: index expire_90_days not generated: `createIndexes` with `expireAfterSeconds`" in result.refusals[1]
    write(result, migrations)
    migrate(mongo_url, migrations, "migrate")
    assert set(live(mongo_url, ["events"])["events"]["indexes"]) == {"user_recent"}


def test_validator_changes_become_coll_mod_on_a_real_mongodb(mongo_url, real_mongodb, tmp_path):
    migrations = tmp_path / "shop" / "mongodb"
    migrations.mkdir(parents=True)
    (migrations / "1-posts.json").write_text(json.dumps(OLD))
    migrate(mongo_url, migrations, "migrate")
    domain = declare(tmp_path / "shop", {"posts.yaml": POSTS + textwrap.dedent("""\
        validator: {$jsonSchema: {bsonType: object, required: [slug]}}
        validationLevel: moderate
    """)})
    result = generate(mongo_url, domain, naming=NamingContext(migrations, "2", "posts validator"))
    doc = json.loads(result.files[0].text)
    assert doc["commands"][0] == {"collMod": "posts", "validator": {"$jsonSchema": {"bsonType": "object",
                                  "required": ["slug"]}}, "validationLevel": "moderate", "validationAction": "error"}
    write(result, migrations)
    assert "mongodb-validator-change" in lint_of(migrations, result.files[0].name)
    migrate(mongo_url, migrations, "migrate")
    want = read_declared(domain)
    assert live(mongo_url, want) == want
    assert generate(mongo_url, domain, naming=NamingContext(migrations, "3", "again")).empty


def test_polymigrate_diff_writes_the_next_file_in_the_domains_folder_and_lints_it(mongo_url, tmp_path):
    migrations = tmp_path / "shop" / "mongodb"
    migrations.mkdir(parents=True)
    (migrations / "1-posts.json").write_text(json.dumps(OLD))
    migrate(mongo_url, migrations, "migrate")
    domain = declare(tmp_path / "shop", {"posts.yaml": POSTS})
    runner = CliRunner()
    args = ["diff", "--current", mongo_url, "--desired", str(domain), "--write", str(migrations),
            "--description", "posts by kind"]

    out = runner.invoke(app, args)
    assert out.exit_code == 0, out.output
    said = "".join(out.output.split())  # rich wraps long lines
    assert (migrations / "2-posts-by-kind.json").is_file() and "wrote" in said
    assert "posts.author_recent:changed" in said and "mongodb-drop-index" in said
    migrate(mongo_url, migrations, "migrate")
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "no difference: nothing to generate" in again.output
    assert sorted(p.name for p in migrations.glob("*.json")) == ["1-posts.json", "2-posts-by-kind.json"]

    bad = runner.invoke(app, ["diff", "--current", mongo_url.rsplit("/", 1)[0], "--desired", str(domain)])
    assert bad.exit_code == 1 and "names no database" in " ".join(bad.output.split())


def test_the_social_commerce_sample_declaration_is_what_its_migrations_build(make_mongo_database, mongo_server,
                                                                              tmp_path):
    """After the sample's files the declared posts and activity feed need nothing more on a real MongoDB;
    on FerretDB, the drop file 4 would have made is generated and what FerretDB lacks is refused by name."""
    from polymigrate.executor import migrate as apply
    from tests.conftest import SPECS, mongo_url_for
    from tests.mongo_samples import runnable, sample_on

    migrations, adapter, ctx, db = sample_on("social-commerce", make_mongo_database("pm_social"))
    url = mongo_url_for(db.name)
    try:
        ok, _ = runnable(adapter, migrations, ctx, mongo_server)
        apply(adapter, ok, ctx)
    finally:
        adapter.close()
    result = generate(url, SPECS / "social-commerce", naming=NamingContext(None, "6", "declared"))
    if not mongo_server.is_ferretdb:
        assert result.empty and not result.refusals, result
        return
    assert json.loads(result.files[0].text)["commands"] == [{"dropIndexes": "posts", "index": "schema_version"}]
    assert [r.split(" not generated")[0] for r in result.refusals] == [
        "activity_feed: validator change", "activity_feed: index expire_after_90_days", "posts: validator change"]
    out = tmp_path / "generated"
    out.mkdir()
    write(result, out)
    migrate(url, out, "migrate")
    again = generate(url, SPECS / "social-commerce", naming=NamingContext(None, "7", "again"))
    assert again.empty and len(again.refusals) == 3


def test_in_a_folder_whose_files_declare_phases_the_generated_file_takes_the_newest(mongo_url, tmp_path):
    migrations = tmp_path / "shop" / "mongodb"
    migrations.mkdir(parents=True)
    (migrations / "1-posts.json").write_text(json.dumps(OLD))
    (migrations / "2-contract.json").write_text(json.dumps({"phase": "contract", "commands": [
        {"dropIndexes": "posts", "index": "slug"}]}))
    migrate(mongo_url, migrations, "migrate")
    domain = declare(tmp_path / "shop", {"posts.yaml": POSTS})
    result = generate(mongo_url, domain, naming=NamingContext(migrations, "3", "posts by kind"))
    assert json.loads(result.files[0].text)["phase"] == "contract"
    assert any(n.startswith("phase contract: the newest file's") for n in result.files[0].notes)
    write(result, migrations)
    assert discover("shop", "mongodb", migrations).problems == []  # an expand file after contract is refused
    migrate(mongo_url, migrations, "migrate")
    assert live(mongo_url, ["posts"]) == read_declared(domain)
