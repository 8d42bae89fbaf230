"""The verify step's built-in checks and the drift report, on real PostgreSQL (and FerretDB) with a real audit store.

One environment with one region; the domain's target and the audit store are fresh databases. Runs
go through the command layer (``migrate_target`` then ``verify_region``), as the DAG's tasks do.
"""

from __future__ import annotations

import logging
import os
import textwrap

import psycopg
import pytest

from polymigrate.audit import PostgresAuditStore
from polymigrate.commands import EnvironmentConnector, RunParams, Who, open_run
from polymigrate.commands.drift import drift_domain, latest_drift
from polymigrate.commands.verbs import migrate_target, summarize, verify_region
from polymigrate.connections import env_var
from polymigrate.errors import PermanentError

pytestmark = pytest.mark.integration

V1 = "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL DEFAULT 0);\n"
V2 = "ALTER TABLE orders ADD CONSTRAINT total_positive CHECK (total >= 0) NOT VALID;\n"


class World:
    def __init__(self, root, target, audit, monkeypatch):
        self.root, self.target, self.audit = root, target, audit
        monkeypatch.setenv(env_var("polymigrate_postgresql_staging_r1"), target)

    def env(self, policy: str = "") -> None:
        (self.root / "environments" / "staging.yaml").write_text(
            "regions:\n  r1: null\n" + (f"policy:\n{textwrap.indent(policy, '  ')}" if policy else ""))

    def domain(self, extra: str = "") -> None:
        (self.root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql:\n    schema: shop\n" + extra)

    def file(self, name: str, text: str) -> None:
        (self.root / "shop" / "postgresql" / name).write_text(text)

    def run(self, **params):
        return open_run(self.root, "shop", "staging", params=RunParams(**params), who=Who.cli(),
                        connector=EnvironmentConnector(), audit=lambda: self.audit)

    def migrate_and_verify(self) -> dict:
        run = self.run()
        try:
            migrate_target(run, "r1", "postgresql", plan_hash=None)
            return verify_region(run, "r1", ["postgresql"])
        finally:
            run.close()

    def drift(self) -> dict:
        run = self.run()
        try:
            return drift_domain(run)
        finally:
            run.close()

    def sql(self, text: str) -> None:
        with psycopg.connect(self.target, autocommit=True) as c:
            c.execute(text)

    def events(self, kind: str):
        with PostgresAuditStore(self.audit) as store:
            return [r.event for r in store.query(kind=kind)]


@pytest.fixture
def world(tmp_path, make_pg_database, monkeypatch) -> World:
    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "shop" / "postgresql").mkdir(parents=True)
    w = World(root, make_pg_database("pm_verify"), make_pg_database("pm_verify_audit"), monkeypatch)
    w.env()
    w.domain()
    w.file("V1__orders.sql", V1)
    return w


def test_a_clean_run_is_verified_with_its_checks_recorded_and_a_baseline(world):
    out = world.migrate_and_verify()
    assert out["failed"] == 0
    [verified] = world.events("verified")
    names = [(c["name"], c["ok"]) for c in verified.details["checks"]]
    assert names == [("ledger equals plan", True), ("invalid indexes", True), ("NOT VALID constraints", True)]
    [snap] = world.events("snapshot")
    assert "orders" in snap.details["snapshot"]["tables"] and snap.region == "r1" and snap.technology == "postgresql"
    # verifying again with nothing changed records no second baseline
    world.migrate_and_verify()
    assert len(world.events("snapshot")) == 1
    assert world.events("verified")[-1].details["snapshots"]["postgresql"]["unchanged_since"]


def test_a_constraint_left_not_valid_fails_verify_naming_it_unless_declared(world):
    world.file("V2__check.sql", V2)
    with pytest.raises(PermanentError) as err:
        world.migrate_and_verify()
    assert "orders.total_positive" in str(err.value) and "NOT VALID" in str(err.value)
    [failed] = world.events("verify_failed")
    bad = [c for c in failed.details["checks"] if not c["ok"]]
    assert [c["name"] for c in bad] == ["NOT VALID constraints"]
    assert world.events("verified") == [] and world.events("snapshot") == []

    world.domain("    allow_not_valid: [orders.total_*]\n")
    assert world.migrate_and_verify()["failed"] == 0
    assert "1 declared in allow_not_valid" in world.events("verified")[-1].details["checks"][2]["detail"]


def test_an_invalid_index_warns_where_the_policy_says_warn(world):
    world.migrate_and_verify()
    world.sql("INSERT INTO shop.orders VALUES (1, 5), (2, 5)")
    with pytest.raises(psycopg.errors.UniqueViolation):  # what an interrupted CONCURRENTLY build leaves
        world.sql("CREATE UNIQUE INDEX CONCURRENTLY orders_total_unique ON shop.orders (total)")
    with pytest.raises(PermanentError) as err:
        world.migrate_and_verify()
    assert "orders_total_unique on orders" in str(err.value)

    world.env("verify_failures: warn\n")
    out = world.migrate_and_verify()
    assert out["failed"] == 1
    verified = world.events("verified")[-1]
    assert [c["name"] for c in verified.details["checks"] if not c["ok"]] == ["invalid indexes"]


def test_a_manual_alter_shows_up_in_drift_and_an_allowlisted_one_does_not(world):
    world.migrate_and_verify()
    assert world.drift()["count"] == 0

    world.sql("ALTER TABLE shop.orders ADD COLUMN note text")
    world.sql("CREATE INDEX manual_total ON shop.orders (total)")
    world.domain("drift:\n  allow: ['postgresql:indexes.manual_*']\n")
    assert world.drift()["count"] == 1
    first = world.events("drift")[-1]
    [d] = first.details["differences"]
    assert (d["object"], d["change"], d["region"]) == ("tables.orders.columns.note", "added", "r1")
    assert d["after"] == {"type": "text", "not_null": False, "default": None}
    assert first.details["targets"]["r1/postgresql"]["allowlisted"] == 1

    # the next night it is still there: reported again, since the first night it was seen
    world.drift()
    again = world.events("drift")[-1]
    assert again.details["differences"][0]["since"] == d["since"]

    # the approval summary of the next run shows it
    run = world.run()
    try:
        summary, _ = summarize(run)
    finally:
        run.close()
    assert summary["drift"]["count"] == 1 and "tables.orders.columns.note added" in summary["drift"]["items"][0]

    # a successful run records the new baseline: what it left is what drift compares with next
    world.file("V2__note.sql", "ALTER TABLE orders ADD COLUMN IF NOT EXISTS note text;\n")
    world.migrate_and_verify()
    assert world.drift()["count"] == 0
    assert latest_drift(PostgresAuditStore(world.audit), "shop", "staging")["count"] == 0


def test_mongodb_drift_an_index_created_by_hand(tmp_path, make_mongo_database, make_pg_database, monkeypatch):
    import pymongo

    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "staging.yaml").write_text("regions:\n  r1: null\n")
    (root / "feed" / "mongodb").mkdir(parents=True)
    (root / "feed" / "domain.yaml").write_text("technologies:\n  mongodb: {}\n"
                                               "drift:\n  allow: ['mongodb:collections.posts.indexes.ops_*']\n")
    (root / "feed" / "mongodb" / "1-posts.json").write_text(
        '{"description": "posts", "commands": [{"create": "posts"}, '
        '{"createIndexes": "posts", "indexes": [{"key": {"author": 1}, "name": "by_author"}]}]}')
    url, audit = make_mongo_database("pm_drift"), make_pg_database("pm_drift_audit")
    monkeypatch.setenv(env_var("polymigrate_mongodb_staging_r1"), url)

    def run():
        return open_run(root, "feed", "staging", params=RunParams(), who=Who.cli(), connector=EnvironmentConnector(),
                        audit=lambda: audit)

    r = run()
    try:
        migrate_target(r, "r1", "mongodb", plan_hash=None)
        assert verify_region(r, "r1", ["mongodb"])["failed"] == 0
    finally:
        r.close()
    client = pymongo.MongoClient(url)
    client.get_default_database()["posts"].create_index([("at", -1)], name="recent")
    client.get_default_database()["posts"].create_index([("x", 1)], name="ops_probe")
    client.close()
    r = run()
    try:
        assert drift_domain(r)["count"] == 1
    finally:
        r.close()
    with PostgresAuditStore(audit) as store:
        [d] = store.query(kind="drift")[-1].event.details["differences"]
    assert (d["technology"], d["object"], d["change"]) == ("mongodb", "collections.posts.indexes.recent", "added")
    assert d["after"]["key"] == {"at": -1}


SUITE = """description: after the full_name backfill every user has one
technology: postgresql
object: users
expectations:
  - expect_column_values_to_not_be_null: {column: full_name}
  - expect_table_row_count_to_be_between: {min_value: 1}
"""


def test_a_backfill_that_leaves_nulls_fails_verify_naming_the_expectation(world, monkeypatch, caplog):
    """GX Core through its SQL datasource (importing GX takes seconds: one test covers the cases)."""
    world.file("V2__users.sql", "CREATE TABLE users (id int PRIMARY KEY, first text, full_name text);\n"
                                "INSERT INTO users VALUES (1, 'Ann', NULL), (2, NULL, NULL);\n")
    world.file("V3__backfill.sql", "UPDATE users SET full_name = first WHERE first IS NOT NULL;\n")
    (world.root / "shop" / "expectations").mkdir()
    (world.root / "shop" / "expectations" / "users_full_name.yaml").write_text(SUITE)
    with pytest.raises(PermanentError) as err:
        world.migrate_and_verify()
    text = str(err.value)
    assert "expectation users_full_name: expect_column_values_to_not_be_null" in text
    assert "users (column=full_name): 1 of 2 row(s) unexpected" in text
    [failed] = world.events("verify_failed")
    assert [(c["name"], c["ok"]) for c in failed.details["checks"] if c["name"].startswith("expectation")] == [
        ("expectation users_full_name: expect_column_values_to_not_be_null", False),
        ("expectation users_full_name: expect_table_row_count_to_be_between", True)]

    world.file("V4__backfill_rest.sql", "UPDATE users SET full_name = 'unknown' WHERE full_name IS NULL;\n")
    with caplog.at_level(logging.INFO):
        assert world.migrate_and_verify()["failed"] == 0
    # the verify task's log says what was checked, not GX's own workings (they were 214 of its 254 lines)
    chatter = [r.getMessage() for r in caplog.records if r.name.startswith("great_expectations") and r.levelno < logging.WARNING]
    assert chatter == [], chatter[:5]

    # through a Unix socket, as make demo's pgserver is reached (no host in the URL): GX's PostgreSQL
    # source refused such a URL ("validation errors for PostgresDatasource"), failing every verify there
    with psycopg.connect(world.target) as c:
        socket_dir = c.execute("SHOW unix_socket_directories").fetchone()[0].split(",")[0].strip()
        port = c.execute("SHOW port").fetchone()[0]
    monkeypatch.setenv(env_var("polymigrate_postgresql_staging_r1"),
                       f"postgresql://postgres@/{world.target.rsplit('/', 1)[1]}?host={socket_dir}&port={port}")
    result = world.migrate_and_verify()
    assert result["failed"] == 0 and result["checks"] >= 5, result

    # a suite naming no GX expectation fails verify saying so; a suite with a typo'd key fails validate
    (world.root / "shop" / "expectations" / "typo.yaml").write_text(
        "technology: postgresql\nobject: users\nexpectations:\n  - expect_column_to_be_lovely: {column: id}\n")
    with pytest.raises(PermanentError, match="GX has no expectation 'expect_column_to_be_lovely'"):
        world.migrate_and_verify()
    (world.root / "shop" / "expectations" / "typo.yaml").write_text(
        "technology: postgresql\nobject: no_such_table\nexpectations:\n  - expect_column_to_exist: {column: id}\n")
    with pytest.raises(PermanentError) as gone:
        world.migrate_and_verify()
    assert "postgresql: expectations: FAILED (could not run: postgresql://" in str(gone.value)
    assert "no_such_table" in str(gone.value)
    (world.root / "shop" / "expectations" / "typo.yaml").write_text(
        "technology: postgresql\nobject: users\nregion: [r1]\nexpectations:\n  - expect_column_to_exist: {column: id}\n")
    from polymigrate.commands.verbs import validate
    from polymigrate.errors import SpecError

    run = world.run()
    try:
        with pytest.raises(SpecError) as bad:
            validate(run)
    finally:
        run.close()
    assert "expectations/typo.yaml:3: unknown key 'region'" in str(bad.value)


def test_production_approval_summary_shows_staging_durations_per_region_and_drift(tmp_path, make_pg_database,
                                                                                 monkeypatch):
    from polymigrate.commands.approval import _preview, summary_markdown
    from polymigrate.policy import Decision

    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "staging.yaml").write_text("regions:\n  s1: null\n")
    (root / "environments" / "production.yaml").write_text(
        "regions:\n  p1: null\n  p2: null\npolicy:\n  promotion_from: staging\n")
    (root / "shop" / "postgresql").mkdir(parents=True)
    (root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql: {}\n")
    (root / "shop" / "postgresql" / "V1__slow.sql").write_text("CREATE TABLE t (id int);\nSELECT pg_sleep(0.4);\n")
    (root / "shop" / "postgresql" / "V2__fast.sql").write_text("ALTER TABLE t ADD COLUMN x int;\n")
    audit = make_pg_database("pm_rehearsal_audit")
    for env, region in (("staging", "s1"), ("production", "p1"), ("production", "p2")):
        monkeypatch.setenv(env_var(f"polymigrate_postgresql_{env}_{region}"), make_pg_database(f"pm_rehearsal_{region}"))

    def run(env):
        return open_run(root, "shop", env, params=RunParams(), who=Who.cli(), connector=EnvironmentConnector(),
                        audit=lambda: audit)

    staging = run("staging")
    try:
        migrate_target(staging, "s1", "postgresql", plan_hash=None)
        verify_region(staging, "s1", ["postgresql"])
    finally:
        staging.close()
    (root / "shop" / "postgresql" / "V3__new.sql").write_text("ALTER TABLE t ADD COLUMN y int;\n")  # not rehearsed
    prod = run("production")
    try:
        migrate_target(prod, "p2", "postgresql", plan_hash=None)  # p2 is up to date: nothing to estimate there
        verify_region(prod, "p2", ["postgresql"])
        with psycopg.connect(os.environ[env_var("polymigrate_postgresql_production_p2")], autocommit=True) as c:
            c.execute("CREATE INDEX by_hand ON t (x)")
        drift_domain(prod)
        preview = _preview(prod)
        summary, _ = summarize(prod)
    finally:
        prod.close()
    est = preview["rehearsal"]["regions"]
    assert list(est) == ["p1"] and est["p1"]["files"] == 3 and est["p1"]["never_rehearsed"] == ["V3__new.sql"]
    assert 0.4 <= est["p1"]["seconds"] < 5 and est["p1"]["slowest"][0]["file"] == "postgresql V1__slow.sql"
    text = summary_markdown("shop", "production", summary, Decision("waiting", 1), ["anyone"], "ann", preview)
    assert "- measured in staging (slowest successful run of the same files), per region:" in text
    assert "  - p1: ~" in text and "1 of 3 file(s) never rehearsed (slowest: postgresql V1__slow.sql" in text
    assert "**1 object(s) changed outside migrations**: `p2/postgresql indexes.by_hand added" in text
