"""Expectation suites on MongoDB (FerretDB) and OpenSearch: the documented subset, run as server-side
counts through each adapter's own client, recorded like GX's results on PostgreSQL."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pymongo
import pytest

from polymigrate.adapters.mongodb.adapter import MongoAdapter
from polymigrate.errors import PermanentError
from polymigrate.expectations import load_suites
from tests.integration.adapters.es_helpers import adapter as es_adapter

pytestmark = pytest.mark.integration


def suites(root: Path, technology: str, obj: str, body: str, name: str = "checks"):
    folder = root / "shop" / "expectations"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(f"technology: {technology}\nobject: {obj}\nexpectations:\n"
                                         + textwrap.indent(textwrap.dedent(body), "  "))
    found, problems = load_suites(root / "shop", ["r1"], "shop")
    assert not problems, problems
    return found


EXPECTATIONS = """\
- expect_column_values_to_not_be_null: {column: full_name}
- expect_column_values_to_not_be_null: {column: full_name, mostly: 0.9}
- expect_column_values_to_be_in_set: {column: status, value_set: [active, closed]}
- expect_column_values_to_be_between: {column: age, min_value: 0, max_value: 130}
- expect_column_values_to_be_unique: {column: email}
- expect_table_row_count_to_be_between: {min_value: 1, max_value: 100}
- expect_table_row_count_to_equal_other_table: {other_table_name: OTHER}
- expect_column_to_exist: {column: nickname}
"""


def docs() -> list[dict]:
    """20 users: two without a full name (one null, one absent), one unknown status (and one null
    status, which in_set ignores as GX does), one age out of range, one email used twice."""
    out = []
    for i in range(20):
        d = {"uid": i, "full_name": f"user {i}", "status": "active", "age": 20 + i, "email": f"u{i}@example.com"}
        out.append(d)
    out[3]["full_name"] = None
    del out[4]["full_name"]
    out[5]["status"] = "banned"
    out[6]["status"] = None
    out[7]["age"] = 200
    out[9]["email"] = out[8]["email"]
    return out


def outcomes(checks) -> list[tuple[str, bool, str]]:
    return [(c.name.split(": ", 1)[1], c.ok, c.detail) for c in checks]


EXPECTED = [
    ("expect_column_values_to_not_be_null", False,
     "users (column=full_name): 2 of 20 document(s) unexpected, e.g. [None, None]"),
    ("expect_column_values_to_not_be_null", True, "users (column=full_name, mostly=0.9): 2 of 20 document(s) unexpected"),
    ("expect_column_values_to_be_in_set", False,
     "users (column=status, value_set=['active', 'closed']): 1 of 19 document(s) unexpected, e.g. ['banned']"),
    ("expect_column_values_to_be_between", False,
     "users (column=age, min_value=0, max_value=130): 1 of 20 document(s) unexpected, e.g. [200]"),
    ("expect_column_values_to_be_unique", False,
     "users (column=email): 2 of 20 document(s) share a value with another (1 value(s), e.g. ['u8@example.com'])"),
    ("expect_table_row_count_to_be_between", True, "users (min_value=1, max_value=100): observed 20"),
]


def test_mongodb_suites_run_as_counts_naming_what_is_unexpected(make_mongo_database, tmp_path):
    url = make_mongo_database("pm_expect")
    client = pymongo.MongoClient(url)
    db = client.get_default_database()
    db["users"].insert_many(docs())
    db["users_copy"].insert_many([{"uid": i} for i in range(19)])
    client.close()
    found = suites(tmp_path, "mongodb", "users", EXPECTATIONS.replace("OTHER", "users_copy"))
    a = MongoAdapter.from_url(url, domain="shop")
    try:
        checks = a.run_expectations(found)
    finally:
        a.close()
    assert outcomes(checks)[:6] == EXPECTED
    assert outcomes(checks)[6:] == [
        ("expect_table_row_count_to_equal_other_table", False, "users (other_table_name=users_copy): 20 document(s), "
                                                               "users_copy has 19"),
        ("expect_column_to_exist", False, "users (column=nickname): in no document")]
    assert all(c.technology == "mongodb" and c.name.startswith("expectation checks: ") for c in checks)


def test_opensearch_suites_run_as_counts_on_an_alias(opensearch_target, tmp_path):
    t = opensearch_target
    index, alias, other = t.name("users_v1"), t.name("users"), t.name("users_old")
    mappings = {"properties": {"full_name": {"type": "keyword"}, "status": {"type": "keyword"},
                               "age": {"type": "integer"}, "email": {"type": "keyword"}}}
    t.api.create_index(index, {"settings": {"number_of_shards": 1}, "mappings": mappings,
                               "aliases": {alias: {}}})
    t.api.create_index(other, {"settings": {"number_of_shards": 1}})
    t.bulk([{"_index": index, "_id": str(d["uid"]), "_source": d} for d in docs()])
    t.bulk([{"_index": other, "_id": str(i), "_source": {"uid": i}} for i in range(20)])
    found = suites(tmp_path, "elasticsearch", alias, EXPECTATIONS.replace("OTHER", other))
    a = es_adapter(t)
    try:
        checks = a.run_expectations(found)
        expected = [(n, ok, d.replace("users ", f"{alias} ", 1)) for n, ok, d in EXPECTED]
        assert outcomes(checks)[:6] == expected
        assert outcomes(checks)[6:] == [
            ("expect_table_row_count_to_equal_other_table", True, f"{alias} (other_table_name={other}): "
                                                                  f"20 document(s), {other} has 20"),
            ("expect_column_to_exist", False, f"{alias} (column=nickname): in no document")]

        # an index that is not there: the suite cannot run, which verify records as a failed check
        gone = suites(tmp_path, "elasticsearch", t.name("nope"), "- expect_table_row_count_to_be_between: {min_value: 1}\n")
        with pytest.raises(PermanentError, match="the expectation suites could not run"):
            a.run_expectations(gone)
    finally:
        a.close()


def test_an_expectation_outside_the_subset_fails_validate_naming_file_and_line(tmp_path):
    folder = tmp_path / "shop" / "expectations"
    folder.mkdir(parents=True)
    (folder / "x.yaml").write_text("technology: mongodb\nobject: users\nexpectations:\n"
                                   "  - expect_column_values_to_match_regex: {column: email, regex: '@'}\n")
    (folder / "y.yaml").write_text("technology: elasticsearch\nobject: users\nexpectations:\n"
                                   "  - expect_column_values_to_be_in_set: {column: status}\n")
    (folder / "z.yaml").write_text("technology: redis\nobject: users\nexpectations:\n"
                                   "  - expect_table_row_count_to_be_between: {min_value: 1}\n")
    found, problems = load_suites(tmp_path / "shop", ["r1"], "shop")
    text = "\n".join(str(p) for p in problems)
    assert found == [] and len(problems) == 3, text
    assert "x.yaml" in text and "expect_column_values_to_match_regex is not run on mongodb" in text
    assert "y.yaml" in text and "expect_column_values_to_be_in_set: missing value_set" in text
    assert "z.yaml" in text and "suites for redis are not run" in text


def test_verify_runs_a_mongodb_suite_and_fails_naming_the_expectation(tmp_path, make_mongo_database, make_pg_database,
                                                                      monkeypatch):
    """Through the command layer, as the DAG's verify task runs it."""
    from polymigrate.audit import PostgresAuditStore
    from polymigrate.commands import EnvironmentConnector, RunParams, Who, open_run
    from polymigrate.commands.verbs import migrate_target, verify_region
    from polymigrate.connections import env_var

    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "staging.yaml").write_text("regions:\n  r1: null\n")
    (root / "feed" / "mongodb").mkdir(parents=True)
    (root / "feed" / "domain.yaml").write_text("technologies:\n  mongodb: {}\n")
    (root / "feed" / "mongodb" / "1-posts.json").write_text(
        '{"description": "posts", "commands": [{"create": "posts"}, {"insert": "posts", "documents": '
        '[{"_id": 1, "author": "ann"}, {"_id": 2, "author": null}]}]}')
    (root / "feed" / "expectations").mkdir()
    (root / "feed" / "expectations" / "posts.yaml").write_text(
        "technology: mongodb\nobject: posts\nexpectations:\n  - expect_column_values_to_not_be_null: {column: author}\n")
    audit = make_pg_database("pm_docexp_audit")
    monkeypatch.setenv(env_var("polymigrate_mongodb_staging_r1"), make_mongo_database("pm_docexp"))
    run = open_run(root, "feed", "staging", params=RunParams(), who=Who.cli(), connector=EnvironmentConnector(),
                   audit=lambda: audit)
    try:
        migrate_target(run, "r1", "mongodb", plan_hash=None)
        with pytest.raises(PermanentError) as err:
            verify_region(run, "r1", ["mongodb"])
    finally:
        run.close()
    assert ("mongodb: expectation posts: expect_column_values_to_not_be_null: FAILED (posts (column=author): "
            "1 of 2 document(s) unexpected, e.g. [None])") in str(err.value)
    with PostgresAuditStore(audit) as store:
        [failed] = [r.event for r in store.query(kind="verify_failed")]
    assert [c["name"] for c in failed.details["checks"] if not c["ok"]] == [
        "expectation posts: expect_column_values_to_not_be_null"]


def test_a_suite_bound_to_phases_waits_for_them_and_a_bad_phase_fails_validate(tmp_path, make_mongo_database,
                                                                               make_pg_database, monkeypatch, caplog):
    """A check that holds only once the release's migrate phase ran (every post has full_name) would fail
    every verify at expand; bound to [migrate, contract] it waits, then runs."""
    from polymigrate.audit import PostgresAuditStore
    from polymigrate.commands import EnvironmentConnector, RunParams, Who, open_run
    from polymigrate.commands.verbs import migrate_target, verify_region
    from polymigrate.connections import env_var

    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "staging.yaml").write_text("regions:\n  r1: null\n")
    (root / "feed" / "mongodb").mkdir(parents=True)
    (root / "feed" / "domain.yaml").write_text("technologies:\n  mongodb: {phases: [expand, migrate]}\n")
    (root / "feed" / "mongodb" / "1-posts.json").write_text(
        '{"phase": "expand", "description": "posts", "commands": [{"create": "posts"}, {"insert": "posts", '
        '"documents": [{"_id": 1, "first": "Ann"}, {"_id": 2, "first": "Bob"}]}]}')
    (root / "feed" / "mongodb" / "2-fill.json").write_text(
        '{"phase": "migrate", "description": "full_name", "commands": [{"update": "posts", "updates": '
        '[{"q": {}, "u": {"$set": {"full_name": "someone"}}, "multi": true}]}]}')
    (root / "feed" / "expectations").mkdir()
    (root / "feed" / "expectations" / "posts.yaml").write_text(
        "technology: mongodb\nobject: posts\nphases: [migrate, contract]\n"
        "expectations:\n  - expect_column_values_to_not_be_null: {column: full_name}\n")
    audit = make_pg_database("pm_docexp_audit")
    monkeypatch.setenv(env_var("polymigrate_mongodb_staging_r1"), make_mongo_database("pm_docexp"))

    def verify_after(target: str) -> list[str]:
        run = open_run(root, "feed", "staging", params=RunParams(target_version=target), who=Who.cli(),
                       connector=EnvironmentConnector(), audit=lambda: audit)
        try:
            migrate_target(run, "r1", "mongodb", plan_hash=None)
            verify_region(run, "r1", ["mongodb"])
        finally:
            run.close()
        with PostgresAuditStore(audit) as store:
            last = [r.event for r in store.query(kind="verified")][-1]
        return [c["name"] for c in last.details["checks"] if c["name"].startswith("expectation")]

    # the run's own logger: an in-process CLI run earlier in the session leaves it at WARNING
    # (cli/migrate.py keeps the console to the CLI's own lines)
    with caplog.at_level("INFO", logger="polymigrate.commands"):
        assert verify_after("1") == []  # expand: the posts have no full_name yet, and that is right
    assert "expectation suite(s) posts not run: bound to other phases than expand" in caplog.text
    assert verify_after("2") == ["expectation posts: expect_column_values_to_not_be_null"]

    (root / "feed" / "expectations" / "posts.yaml").write_text(
        "technology: mongodb\nobject: posts\nphases: [backfill]\n"
        "expectations:\n  - expect_column_values_to_not_be_null: {column: full_name}\n")
    found, problems = load_suites(root / "feed", ["r1"], "feed")
    text = "\n".join(str(p) for p in problems)
    assert found == [] and "posts.yaml:3" in text and "'expand', 'migrate' or 'contract'" in text, text
