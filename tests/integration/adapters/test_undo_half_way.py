"""Undo that stops half way (issue 28, item 6), on the real engines: the rerun of the undo resumes
where it stopped, ``status`` says the version is half undone (not ``success``), a migrate run is
refused with the fix that helps (finish the undo), and ``repair`` accepts a fixed undo file."""

from __future__ import annotations

import time

import psycopg
import pytest

from polymigrate.adapters.postgresql.adapter import PostgresAdapter
from polymigrate.catalog import Kind, discover
from polymigrate.errors import PermanentError, ValidationFailed
from polymigrate.executor import migrate, undo_to
from polymigrate.ledger import RunContext
from polymigrate.reconcile import State, reconcile

pytestmark = pytest.mark.integration


def ctx() -> RunContext:
    return RunContext(domain="shop", environment="testing", region="r1", actor="tester@host", run_id="run-1",
                      lock_wait_seconds=5)


def q(url: str, text: str):
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(text)
        return cur.fetchall() if cur.description else None


def catalog(root):
    cat = discover("shop", "postgresql", root)
    assert not cat.problems, cat.problems
    return cat.migrations["postgresql"]


def states(adapter, root):
    ms = [m for m in catalog(root) if m.kind is not Kind.UNDO]
    return {i.version: i.state for i in reconcile(ms, adapter.read_ledger())}


def test_a_postgres_undo_file_failing_on_its_second_statement_resumes_there_and_shows_half_undone(pg_url, tmp_path):
    root = tmp_path / "postgresql"
    root.mkdir()
    (root / "V1__a.sql").write_text("CREATE TABLE a (id int);\n")
    (root / "V2__b.sql").write_text("CREATE TABLE b (id int);\nCREATE TABLE c (id int);\n")
    # the second statement fails (a typo): the first, DROP TABLE b, is committed on its own
    (root / "U2__b.sql").write_text("-- polymigrate: transactional=false\nDROP TABLE b;\nDROP TABLE cc;\n")
    adapter = PostgresAdapter.from_url(pg_url, domain="shop")
    try:
        migrate(adapter, [m for m in catalog(root) if m.kind is not Kind.UNDO], ctx())
        with pytest.raises(PermanentError) as info:
            undo_to(adapter, catalog(root), ctx(), "1")
        assert "statement 2 of 2" in str(info.value)
        assert "migrate again" not in (info.value.hint or "")
        assert q(pg_url, "SELECT to_regclass('b'), to_regclass('c') IS NOT NULL") == [(None, True)]
        # status: half undone, not success
        assert states(adapter, root)["2"] is State.HALF_UNDONE
        # migrate would re-apply over a half-undone version: refused, saying to finish the undo
        with pytest.raises(ValidationFailed) as refused:
            migrate(adapter, [m for m in catalog(root) if m.kind is not Kind.UNDO], ctx())
        assert "half way" in str(refused.value) and "undo" in str(refused.value)
        assert "DROP TABLE b" not in str(refused.value) or "1 statement" in str(refused.value)
        # the undo file is fixed; it changed after part of it committed, so repair accepts it first
        (root / "U2__b.sql").write_text("-- polymigrate: transactional=false\nDROP TABLE b;\nDROP TABLE c;\n")
        with pytest.raises(PermanentError, match="repair"):
            undo_to(adapter, catalog(root), ctx(), "1")
        report = adapter.repair(catalog(root), ctx())
        assert report.realigned == ["U2__b.sql"]
        # the rerun resumes at statement 2: DROP TABLE b is not run again (it would fail: b is gone)
        done = undo_to(adapter, catalog(root), ctx(), "1")
        assert [a["version"] for a in done.applied] == ["2"] and done.current_version == "1"
        assert q(pg_url, "SELECT to_regclass('b'), to_regclass('c')") == [(None, None)]
        assert states(adapter, root)["2"] is State.UNDONE
        again = migrate(adapter, [m for m in catalog(root) if m.kind is not Kind.UNDO], ctx())
        assert [a["version"] for a in again.applied] == ["2"]
    finally:
        adapter.close()


def test_a_mongodb_undo_stopped_half_way_shows_half_undone_and_the_same_undo_resumes_it(mongo_url, tmp_path):
    import json

    import pymongo

    from polymigrate.adapters.mongodb.adapter import MongoAdapter

    folder = tmp_path / "mongodb"
    folder.mkdir()
    (folder / "1-customers.json").write_text(json.dumps({"description": "customers", "commands": [
        {"create": "customers"}], "down": [{"drop": "customers"},
                                           {"insert": "undo_log", "documents": [{"_id": "customers dropped"}]}]}))
    cat = discover("shop", "mongodb", folder)
    assert not cat.problems, cat.problems
    migs = cat.applicable("mongodb")
    client = pymongo.MongoClient(mongo_url)
    db = client.get_default_database()
    db.undo_log.insert_one({"_id": "customers dropped"})  # the undo's second command will fail on it
    a = MongoAdapter.from_url(mongo_url, domain="shop")
    try:
        migrate(a, migs, ctx())
        with pytest.raises(PermanentError):
            undo_to(a, migs, ctx(), "0")
        assert "customers" not in db.list_collection_names()  # the first command of down committed
        assert {i.version: i.state for i in reconcile(migs, a.read_ledger())}["1"] is State.HALF_UNDONE
        with pytest.raises(ValidationFailed, match="half undone"):
            migrate(a, migs, ctx())
        db.undo_log.delete_many({})  # the cause is gone; the same undo resumes at command 2
        done = undo_to(a, migs, ctx(), "0")
        assert [x["version"] for x in done.applied] == ["1"]
        assert [d["_id"] for d in db.undo_log.find()] == ["customers dropped"]
        assert {i.version: i.state for i in reconcile(migs, a.read_ledger())}["1"] is State.UNDONE
    finally:
        a.close()
        client.close()


@pytest.mark.parametrize("catch_up", ["none", {"field": "updated_at", "overlap": "1s"}], ids=["none", "field"])
def test_a_document_deleted_through_the_alias_after_a_blue_green_switch_stays_deleted_after_undo(
        search_target, tmp_path, catch_up):
    """Issue 28 item 6: undo carries back deletes as well as writes (a deleted product must not come back)."""
    import time

    from tests.integration.adapters.es_helpers import PRODUCTS_V2, adapter, docs, migrations, seed, step_file
    from tests.integration.adapters.es_helpers import ctx as es_ctx

    t = search_target
    alias = t.name("products")
    seed(t, alias, 20)
    migs = migrations(tmp_path / "m", {"1-products-v2.json": step_file(
        {"blue_green": {"alias": alias, "body": {"mappings": PRODUCTS_V2}, "catch_up": catch_up}})})
    a = adapter(t)
    try:
        migrate(a, migs, es_ctx())
        t.api.request("DELETE", f"/{alias}/_doc/p3", params={"refresh": "true"})
        t.api.request("PUT", f"/{alias}/_doc/fresh", params={"refresh": "true"},
                      body={"sku": "fresh", "price": 1.25, "currency": "EUR", "updated_at": int(time.time() * 1000)})
        undo_to(a, migs, es_ctx(run_id="run-2"), "0")
        assert list(t.api.alias_targets(alias)) == [f"{alias}_v1"]
        back = docs(t, alias)
        assert "p3" not in back, "a document deleted after the switch came back on undo"
        assert "fresh" in back and len(back) == 20
    finally:
        a.close()


def test_undo_below_a_baseline_or_a_contract_migration_gives_only_the_fix_that_helps(pg_url, tmp_path):
    """Issue 28 item 6, messages: 'repair first' helps only a changed or missing file; a baseline was
    never run (nothing to undo) and a contract-phase migration is reverted by a new forward one."""
    root = tmp_path / "postgresql"
    root.mkdir()
    (root / "V1__a.sql").write_text("CREATE TABLE a (id int);\n")
    (root / "V2__b.sql").write_text("-- polymigrate: phase=contract\nCREATE TABLE b (id int);\n")
    (root / "U2__b.sql").write_text("DROP TABLE b;\n")
    adapter = PostgresAdapter.from_url(pg_url, domain="shop")
    try:
        adapter.baseline("1", "existing schema", ctx())
        migrate(adapter, [m for m in catalog(root) if m.kind is not Kind.UNDO], ctx())
        with pytest.raises(PermanentError) as info:
            undo_to(adapter, catalog(root), ctx(), "0")
        text = f"{info.value} {info.value.hint}"
        assert "repair" not in text, text
        assert "baseline" in text and "new forward" in (info.value.hint or ""), text
        assert q(pg_url, "SELECT to_regclass('b') IS NOT NULL") == [(True,)]
    finally:
        adapter.close()


def test_a_blue_green_killed_after_creating_its_index_reuses_it_instead_of_leaving_it_empty(
        search_target, tmp_path, monkeypatch):
    """Found by bench/soak.py (issue 28, item 7): a run killed between creating <alias>_v2 and recording
    it left an empty _v2 behind, and the rerun built _v3."""
    from polymigrate.adapters.elasticsearch.api import SearchApi
    from tests.integration.adapters.es_helpers import PRODUCTS_V2, adapter, migrations, seed, step_file
    from tests.integration.adapters.es_helpers import ctx as es_ctx

    t = search_target
    alias = t.name("products")
    seed(t, alias, 20)
    migs = migrations(tmp_path / "m", {"1-products-v2.json": step_file(
        {"blue_green": {"alias": alias, "body": {"mappings": PRODUCTS_V2}, "catch_up": "none"}})})
    real = SearchApi.put_settings

    def killed(self, index, settings):  # the process dies right after the index was created
        raise KeyboardInterrupt

    monkeypatch.setattr(SearchApi, "put_settings", killed)
    a = adapter(t)
    with pytest.raises(KeyboardInterrupt):
        migrate(a, migs, es_ctx())
    a.close()
    assert t.api.exists(f"{alias}_v2")
    monkeypatch.setattr(SearchApi, "put_settings", real)
    time.sleep(2.5)  # the killed run's lease (es_helpers' adapters use a short one) runs out
    b = adapter(t)
    try:
        migrate(b, migs, es_ctx(run_id="run-2"), )
        assert list(t.api.alias_targets(alias)) == [f"{alias}_v2"] and t.api.count(alias) == 20
        assert not t.api.exists(f"{alias}_v3")
    finally:
        b.close()
