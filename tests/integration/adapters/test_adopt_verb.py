"""Adoption is one adapter verb (``adopt``) reached through one command function (``verbs.adopt``):
a Flyway history and a migrate-mongo changelog both land in the ledger under the lock, and both are
on the audit record; asking an adapter for another tool's history is refused before anything is read."""

from __future__ import annotations

from datetime import datetime

import psycopg
import pytest
from pymongo import MongoClient

from polymigrate.adapters.mongodb.adapter import MongoAdapter
from polymigrate.adapters.postgresql.adapter import PostgresAdapter
from polymigrate.adapters.redis.adapter import RedisAdapter
from polymigrate.catalog import discover
from polymigrate.commands import verbs
from polymigrate.errors import PermanentError
from polymigrate.ledger import RunContext, Status
from tests.integration.adapters.test_postgres_flyway import FLYWAY_DDL
from tests.recording import RecordingSink

pytestmark = pytest.mark.integration


def ctx() -> RunContext:
    return RunContext(domain="shop", environment="testing", region="r1", actor="tester@host", run_id="adopt")


def test_a_flyway_history_is_adopted_through_the_command_layer_and_audited(pg_url):
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute(FLYWAY_DDL.replace('"public"', '"legacy"').replace("CREATE TABLE", "CREATE SCHEMA legacy; CREATE TABLE", 1))
        c.execute("INSERT INTO legacy.flyway_schema_history VALUES "
                  "(1, '1', 'a', 'SQL', 'V1__a.sql', 42, 'f', now(), 5, true),"
                  "(2, '2', 'b', 'SQL', 'V2__b.sql', 43, 'f', now(), 5, true)")
    sink = RecordingSink()
    a = PostgresAdapter.from_url(pg_url, domain="shop")
    try:
        report = verbs.adopt(a, [], ctx(), tool="flyway", source="legacy.flyway_schema_history", sink=sink)
        assert (report.source, report.imported) == ("legacy.flyway_schema_history", 2)
        assert [e.version for e in a.read_ledger()] == ["1", "2"]
        assert verbs.adopt(a, [], ctx(), tool="flyway", source="legacy.flyway_schema_history").imported == 0
    finally:
        a.close()
    [event] = sink.events
    assert event.kind == "baselined"
    assert event.details["adopted"] == "flyway" and event.details["adopted_from"] == "legacy.flyway_schema_history"
    assert event.details["rows"] == 2


def test_a_migrate_mongo_changelog_is_adopted_through_the_command_layer_and_audited(mongo_url, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "20240101000000-create.js").write_text("module.exports = { async up(db) {} };\n")
    (folder / "20240202000000-seed.js").write_text("module.exports = { async up(db) {} };\n")
    with MongoClient(mongo_url) as client:
        client.get_default_database()["migrations_log"].insert_many([
            {"fileName": "20240101000000-create.js", "appliedAt": datetime(2024, 1, 1)},
            {"fileName": "20231231000000-gone.js", "appliedAt": datetime(2023, 12, 31)}])
    sink = RecordingSink()
    a = MongoAdapter.from_url(mongo_url, domain="shop")
    try:
        migrations = discover("shop", "mongodb", folder).applicable("mongodb")
        report = verbs.adopt(a, migrations, ctx(), tool="migrate-mongo", source="migrations_log", sink=sink)
        assert report.imported == 2 and report.missing == ["20231231000000-gone.js"]
        assert report.source.endswith(".migrations_log")
        assert {e.script: e.status for e in a.read_ledger()} == {"20231231000000-gone.js": Status.SUCCESS,
                                                                 "20240101000000-create.js": Status.SUCCESS}
    finally:
        a.close()
    [event] = sink.events  # before the one verb, this import recorded no audit event
    assert event.kind == "baselined" and event.details["adopted"] == "migrate-mongo"
    assert event.details["rows"] == 2 and event.details["missing"] == ["20231231000000-gone.js"]


def test_another_tools_history_is_refused_before_anything_is_read(pg_url, redis_url):
    sink = RecordingSink()
    a = PostgresAdapter.from_url(pg_url, domain="shop")
    try:
        with pytest.raises(PermanentError, match="postgresql cannot adopt a migrate-mongo history .it adopts flyway's"):
            verbs.adopt(a, [], ctx(), tool="migrate-mongo", sink=sink)
    finally:
        a.close()
    r = RedisAdapter.from_url(redis_url, domain="shop")
    try:
        with pytest.raises(PermanentError, match="redis cannot adopt a flyway history") as info:
            verbs.adopt(r, [], ctx(), tool="flyway", sink=sink)
        assert "Flyway history into PostgreSQL" in (info.value.hint or "")
    finally:
        r.close()
    assert sink.events == []
