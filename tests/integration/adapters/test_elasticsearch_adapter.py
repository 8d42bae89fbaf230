"""The Elasticsearch/OpenSearch adapter on a real server: templates, mappings, blue-green, undo, retention.

Every test runs on OpenSearch, and on Elasticsearch when ES_URL is set (``search_target``).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from polymigrate.adapters.elasticsearch.api import SearchError
from polymigrate.errors import PermanentError
from polymigrate.executor import migrate, undo_to
from polymigrate.ledger import Status

from tests.integration.adapters.es_helpers import (PAST_MS, PRODUCTS_V2, adapter, ctx, docs, migrations, run, seed,
                                                   step_file)

pytestmark = pytest.mark.integration


def blue_green(alias: str, **kw) -> str:
    return step_file({"blue_green": {"alias": alias, **kw}}, description="products with exact prices")


# --- blue-green -----------------------------------------------------------------------------------

def test_blue_green_copies_every_document_and_switches_the_alias_with_its_write_index(search_target, tmp_path, caplog):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 3000)
    before = docs(t, f"{alias}_v1")
    caplog.set_level(logging.INFO, logger="polymigrate")
    result = run(t, tmp_path / "m", {"1-products-v2.json": blue_green(
        alias, body={"settings": {"number_of_shards": 1, "refresh_interval": "5s"}, "mappings": PRODUCTS_V2},
        catch_up="none", requests_per_second=3000)}, log_every_seconds=0)
    assert [a["action"] for a in result.applied] == ["apply"]

    assert t.api.alias_targets(alias) == {f"{alias}_v2": {"is_write_index": True}}
    assert docs(t, alias) == before                        # every document, as it was
    assert docs(t, f"{alias}_v1") == before                # the old index is retained, untouched
    mapping = t.api.get_mapping(f"{alias}_v2")[f"{alias}_v2"]["mappings"]
    assert mapping["properties"]["price"]["type"] == "scaled_float"
    assert mapping["_meta"]["polymigrate"]["source"] == f"{alias}_v1"
    settings = t.api.get_settings(f"{alias}_v2")[f"{alias}_v2"]["settings"]
    assert settings["index.refresh_interval"] == "5s"      # the file's value, not the -1 used while copying
    (entry,) = adapter(t).read_ledger()
    (switch,) = entry.progress["switches"]
    assert (switch["from"], switch["to"], switch["counts"]["source"], switch["counts"]["target"]) == \
        (f"{alias}_v1", f"{alias}_v2", 3000, 3000)
    until = datetime.fromisoformat(switch["retain_until"]) - datetime.fromisoformat(switch["switched_at"])
    assert until == timedelta(days=7)
    progress_lines = [r.getMessage() for r in caplog.records if "% (" in r.getMessage() and "ETA" in r.getMessage()]
    assert progress_lines, "the reindex progress (percent, rate, ETA) is logged while it runs"


def test_the_new_index_takes_its_mapping_from_the_index_template(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 50)
    run(t, tmp_path / "m", {
        "1-template.json": step_file({"index_template": {"name": alias, "index_patterns": [f"{alias}_v*"],
                                                         "priority": 300, "body": {"mappings": PRODUCTS_V2}}}),
        "2-products-v2.json": blue_green(alias, catch_up="none"),
    })
    props = t.api.get_mapping(alias)[f"{alias}_v2"]["mappings"]["properties"]
    assert props["price"] == {"type": "scaled_float", "scaling_factor": 100.0}


def test_writes_during_the_copy_are_caught_up_by_the_field_and_none_is_lost(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 3000)
    written: dict[str, float] = {}  # id -> last price acknowledged by the server
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            doc_id = f"p{i % 3000}" if i % 2 else f"new{i}"  # updates of old documents and new ones
            price = 1000 + i
            try:
                t.api.request("PUT", f"/{alias}/_doc/{doc_id}", body={
                    "sku": doc_id, "price": price, "currency": "USD", "updated_at": int(time.time() * 1000)})
                written[doc_id] = price
            except SearchError as exc:
                errors.append(str(exc))
            i += 1
            time.sleep(0.005)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        run(t, tmp_path / "m", {"1-products-v2.json": blue_green(
            alias, body={"mappings": PRODUCTS_V2}, catch_up={"field": "updated_at", "overlap": "2s"},
            requests_per_second=1500)})
        time.sleep(0.5)  # and some writes after the switch, into the new index
    finally:
        stop.set()
        thread.join()
    assert errors == []
    assert len(written) > 100 and any(k.startswith("new") for k in written)
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v2"]
    now = docs(t, alias)
    assert {k: now[k]["price"] for k in written} == written          # every acknowledged write, latest value
    assert set(docs(t, f"{alias}_v1")) <= set(now)                     # nothing of the old index missing


def test_freeze_refuses_writes_during_the_copy_and_the_new_index_takes_them_after(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 2000)
    refused: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            try:
                t.api.request("PUT", f"/{alias}/_doc/during", body={"sku": "x", "price": 1, "currency": "EUR",
                                                                    "updated_at": PAST_MS})
            except SearchError as exc:
                refused.append(exc.status or 0)
            time.sleep(0.02)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        run(t, tmp_path / "m", {"1-products-v2.json": blue_green(alias, body={"mappings": PRODUCTS_V2},
                                                                 catch_up="freeze", requests_per_second=1000)})
    finally:
        stop.set()
        thread.join()
    assert refused and set(refused) == {403}  # cluster_block_exception while frozen: writers retry
    t.api.request("PUT", f"/{alias}/_doc/after", params={"refresh": "true"},
                  body={"sku": "y", "price": 2, "currency": "EUR", "updated_at": PAST_MS})
    assert "after" in docs(t, f"{alias}_v2")
    old = t.api.get_settings(f"{alias}_v1")[f"{alias}_v1"]["settings"]
    assert old["index.blocks.write"] == "true"  # retained read-only
    assert t.api.count(alias) == t.api.count(f"{alias}_v1") + 1


def test_a_source_without_a_catch_up_field_is_refused_before_anything_is_created(search_target, tmp_path):
    t = search_target
    alias = t.name("orders")
    seed(t, alias, 10, mapping={"properties": {"sku": {"type": "keyword"}, "price": {"type": "float"},
                                               "currency": {"type": "keyword"},
                                               "updated_at": {"type": "keyword"}}})
    with pytest.raises(PermanentError) as info:
        run(t, tmp_path / "m", {"1-orders-v2.json": blue_green(alias)})
    text = str(info.value)
    assert "1-orders-v2.json" in text and "catch_up" in text and "freeze" in text
    assert not t.api.exists(f"{alias}_v2")
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v1"]


def test_at_timestamp_is_caught_up_by_default(search_target, tmp_path):
    t = search_target
    alias = t.name("events")
    seed(t, alias, 0, mapping={"properties": {"@timestamp": {"type": "date"}, "kind": {"type": "keyword"}}})
    t.bulk({"_index": alias, "_id": str(i), "_source": {"@timestamp": PAST_MS + i, "kind": "a"}} for i in range(100))
    run(t, tmp_path / "m", {"1-events-v2.json": blue_green(alias)})
    (entry,) = adapter(t).read_ledger()
    (switch,) = entry.progress["switches"]
    assert (switch["mode"], switch["field"]) == ("field", "@timestamp")
    assert t.api.count(alias) == 100


def test_a_failed_verification_leaves_the_alias_where_it_was(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 200)
    bad = blue_green(alias, body={"mappings": PRODUCTS_V2}, catch_up="none",
                     script={"source": "if (ctx._source.price > 10) { ctx._source.remove('currency') }"},
                     verify={"query": {"exists": {"field": "currency"}}})
    with pytest.raises(PermanentError) as info:
        run(t, tmp_path / "m", {"1-products-v2.json": bad})
    assert "verification failed" in str(info.value) and "verify query" in str(info.value)
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v1"]
    (entry,) = adapter(t).read_ledger()
    assert entry.status is Status.FAILED and "verify query" in entry.progress["error"]


def test_a_document_the_new_mapping_rejects_fails_the_step_naming_it(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 20)
    strict = {"dynamic": "strict", "properties": {"sku": {"type": "keyword"}}}
    with pytest.raises(PermanentError) as info:
        run(t, tmp_path / "m", {"1-sku-only.json": blue_green(alias, body={"mappings": strict}, catch_up="none")})
    assert "strict_dynamic_mapping_exception" in str(info.value) and "1-sku-only.json" in str(info.value)
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v1"]


# --- templates, mappings, raw requests ------------------------------------------------------------

def test_templates_accept_the_composable_the_legacy_and_the_index_body_forms(search_target, tmp_path):
    t = search_target
    n = t.name
    run(t, tmp_path / "m", {"1-templates.json": step_file(
        {"component_template": {"name": n("base"), "body": {"settings": {"number_of_shards": 1}}}},
        {"index_template": {"name": n("composable"), "body": {
            "index_patterns": [n("a-*")], "priority": 10, "composed_of": [n("base")],
            "template": {"mappings": {"properties": {"a": {"type": "keyword"}}}}}}},
        {"index_template": {"name": n("legacy"), "body": {
            "index_patterns": [n("b-*")], "order": 7, "settings": {"number_of_replicas": 0},
            "mappings": {"_doc": {"properties": {"b": {"type": "long"}}}}}}},
        {"index_template": {"name": n("body"), "index_patterns": [n("c-*")], "priority": 5, "body": {
            "mappings": {"properties": {"c": {"type": "date"}}}}}},
    )})
    got = {x["name"]: x["index_template"] for x in
           t.api.request("GET", f"/_index_template/{t.prefix}*")["index_templates"]}
    assert got[n("composable")]["composed_of"] == [n("base")]
    assert (got[n("legacy")]["priority"], got[n("legacy")]["template"]["mappings"]["properties"]["b"]["type"]) == (7, "long")
    assert got[n("body")]["index_patterns"] == [n("c-*")]
    t.api.create_index(n("b-1"))
    assert t.api.get_mapping(n("b-1"))[n("b-1")]["mappings"]["properties"]["b"]["type"] == "long"

    with pytest.raises(PermanentError) as info:
        run(t, tmp_path / "m", {"2-no-patterns.json": step_file(
            {"index_template": {"name": n("nopat"), "body": {"mappings": {}}}})})
    assert "index_patterns" in str(info.value)


def test_put_mapping_adds_fields_and_refuses_changes_that_need_a_reindex(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 5)
    run(t, tmp_path / "a", {"1-barcode.json": step_file(
        {"put_mapping": {"index": alias, "body": {"properties": {"barcode": {"type": "keyword"}}}}})})
    assert t.api.get_mapping(alias)[f"{alias}_v1"]["mappings"]["properties"]["barcode"] == {"type": "keyword"}

    a = adapter(t)
    try:
        with pytest.raises(PermanentError) as info:
            migrate(a, migrations(tmp_path / "b", {
                "1-barcode.json": step_file({"put_mapping": {"index": alias, "body": {
                    "properties": {"barcode": {"type": "keyword"}}}}}),
                "2-price-exact.json": step_file({"put_mapping": {"index": alias, "body": {
                    "properties": {"price": {"type": "scaled_float", "scaling_factor": 100}}}}})}), ctx())
    finally:
        a.close()
    text = str(info.value)
    assert "2-price-exact.json" in text and "price: type float → scaled_float" in text and "blue_green" in text
    assert t.api.get_mapping(alias)[f"{alias}_v1"]["mappings"]["properties"]["price"] == {"type": "float"}


def test_a_resumed_create_index_never_adopts_an_index_made_by_hand_with_another_mapping(search_target, tmp_path):
    """Issue 28 item 2: an index of the same name made by hand (x: integer); the file's create_index
    (x: text) fails "already exists", and so does every rerun: it is never recorded as created."""
    t = search_target
    name = t.name("events")
    t.api.create_index(name, {"mappings": {"properties": {"x": {"type": "integer"}}}})
    files = {"1-events.json": step_file({"create_index": {"index": name, "body": {
        "mappings": {"properties": {"x": {"type": "text"}}}}}})}
    for attempt in range(2):
        a = adapter(t)
        try:
            with pytest.raises(PermanentError, match="already exists") as info:
                migrate(a, migrations(tmp_path / f"m{attempt}", files), ctx(run_id=f"run-{attempt}"))
            (row,) = a.read_ledger()
        finally:
            a.close()
        assert row.status is Status.FAILED, attempt
        assert "1-events.json" in str(info.value)
    assert t.api.get_mapping(name)[name]["mappings"]["properties"]["x"] == {"type": "integer"}


def test_a_create_index_whose_answer_was_lost_is_adopted_on_retry_as_the_earlier_try_made_it(search_target, tmp_path):
    """The positive side of item 2: the server created the index but the answer never came back (a
    connection cut after the request): the retry finds it, created after the recorded request and
    with the body's mapping, and records the step done instead of failing "already exists"."""
    from polymigrate.errors import TransientError

    t = search_target
    name = t.name("events")
    files = {"1-events.json": step_file({"create_index": {"index": name, "body": {
        "mappings": {"properties": {"x": {"type": "text"}}}}}})}
    a = adapter(t)
    real = a.api.create_index

    def created_then_cut(index, body=None):
        answer = real(index, body)
        if index != name:  # the ledger index
            return answer
        raise SearchError("connection reset after the request was sent", status=None)

    a.api.create_index = created_then_cut
    try:
        with pytest.raises(TransientError):
            migrate(a, migrations(tmp_path / "m", files), ctx())
        a.api.create_index = real
        result = migrate(a, migrations(tmp_path / "m", files), ctx(run_id="run-2"))
    finally:
        a.close()
    assert [x["action"] for x in result.applied] == ["resume"]
    assert t.api.get_mapping(name)[name]["mappings"]["properties"]["x"]["type"] == "text"


def test_raw_requests_in_both_forms(search_target, tmp_path):
    t = search_target
    run(t, tmp_path / "m", {"1-raw.json": step_file(
        {"method": "PUT", "path": f"/{t.name('raw')}", "body": {"mappings": {"properties": {"x": {"type": "long"}}}}},
        {"request": {"method": "PUT", "path": f"/{t.name('raw')}/_mapping", "body": {
            "properties": {"y": {"type": "keyword"}}}}})})
    assert set(t.api.get_mapping(t.name("raw"))[t.name("raw")]["mappings"]["properties"]) == {"x", "y"}


def test_an_ingest_pipeline_step_used_by_blue_green(search_target, tmp_path):
    t = search_target
    if not t.api.request("GET", "/_nodes/ingest:true/_none")["_nodes"]["total"]:
        pytest.skip(f"{t.label} has no ingest node (the engines runner gives its node the data and "
                    "cluster_manager roles only)")
    alias, pipeline = t.name("products"), t.name("stamp")
    seed(t, alias, 30)
    run(t, tmp_path / "m", {
        "1-pipeline.json": step_file({"pipeline": {"name": pipeline, "body": {
            "processors": [{"set": {"field": "currency", "value": "CHF"}}]}}}),
        "2-products-v2.json": blue_green(alias, body={"mappings": PRODUCTS_V2}, pipeline=pipeline, catch_up="none"),
    })
    assert {d["currency"] for d in docs(t, alias).values()} == {"CHF"}


def test_a_bad_raw_request_fails_permanently_with_the_servers_reason(search_target, tmp_path):
    t = search_target
    with pytest.raises(PermanentError) as info:
        run(t, tmp_path / "m", {"1-bad.json": step_file(
            {"method": "PUT", "path": f"/{t.name('x')}", "body": {"settings": {"number_of_shards": "many"}}})})
    assert "1-bad.json" in str(info.value) and "400" in str(info.value)


# --- undo and retention ---------------------------------------------------------------------------

def test_undo_points_the_alias_back_and_carries_back_what_was_written_since(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 100)
    files = {"1-products-v2.json": blue_green(alias, body={"mappings": PRODUCTS_V2},
                                              catch_up={"field": "updated_at", "overlap": "1s"})}
    migs = migrations(tmp_path / "m", files)
    a = adapter(t)
    try:
        migrate(a, migs, ctx())
        now_ms = int(time.time() * 1000)
        t.api.request("PUT", f"/{alias}/_doc/p1", params={"refresh": "true"},
                      body={"sku": "p1", "price": 99.5, "currency": "EUR", "updated_at": now_ms})
        t.api.request("PUT", f"/{alias}/_doc/fresh", params={"refresh": "true"},
                      body={"sku": "fresh", "price": 1.25, "currency": "EUR", "updated_at": now_ms})
        result = undo_to(a, migs, ctx(run_id="run-2"), "0")
        assert [x["action"] for x in result.applied] == ["undo"]
        assert t.api.alias_targets(alias) == {f"{alias}_v1": {"is_write_index": True}}
        back = docs(t, alias)
        assert back["p1"]["price"] == 99.5 and "fresh" in back and len(back) == 101
        (entry,) = a.read_ledger()
        assert entry.status is Status.UNDONE
        again = migrate(a, migs, ctx(run_id="run-3"))  # pending again: a fresh index, v2 is retained
        assert [x["action"] for x in again.applied] == ["apply"]
        assert list(t.api.alias_targets(alias)) == [f"{alias}_v3"] and t.api.count(alias) == 101
    finally:
        a.close()


def test_undo_checks_the_retained_index_exists_before_touching_anything(search_target, tmp_path):
    """Issue 28 item 6: the index before a switch deleted by hand (not by retention): the dry run
    refuses, and the real undo changes nothing, naming the missing index, for every version at once."""
    t = search_target
    alias = t.name("products")
    seed(t, alias, 10)
    files = {"1-products-v2.json": blue_green(alias, body={"mappings": PRODUCTS_V2}, catch_up="none"),
             "2-products-v3.json": blue_green(alias, body={"mappings": PRODUCTS_V2}, catch_up="none")}
    migs = migrations(tmp_path / "m", files)
    a = adapter(t)
    try:
        migrate(a, migs, ctx())
        t.api.delete_index([f"{alias}_v1"])  # by hand: version 1's undo has nowhere to go back to
        for dry in (True, False):
            with pytest.raises(PermanentError) as info:
                undo_to(a, migs, ctx(run_id="run-2"), "0", dry_run=dry)
            assert f"{alias}_v1" in str(info.value) and "no longer exists" in str(info.value), str(info.value)
        assert list(t.api.alias_targets(alias)) == [f"{alias}_v3"]  # version 2 was not undone either
        assert [e.status for e in a.read_ledger()] == [Status.SUCCESS, Status.SUCCESS]
    finally:
        a.close()


def test_retention_deletes_the_old_index_only_after_retain_days_and_then_undo_is_refused(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 10)
    migs = migrations(tmp_path / "m", {"1-products-v2.json": blue_green(
        alias, body={"mappings": PRODUCTS_V2}, catch_up="none", retain_days=2)})
    a = adapter(t)
    try:
        migrate(a, migs, ctx())
        assert a.expire_retained(ctx()) == []
        assert a.expire_retained(ctx(), now=datetime.now(timezone.utc) + timedelta(days=3), dry_run=True) == \
            [f"{alias}_v1"]
        assert t.api.exists(f"{alias}_v1")
        assert a.expire_retained(ctx(), now=datetime.now(timezone.utc) + timedelta(days=3)) == [f"{alias}_v1"]
        assert not t.api.exists(f"{alias}_v1") and t.api.count(alias) == 10
        with pytest.raises(PermanentError) as info:
            undo_to(a, migs, ctx(), "0")
        assert "deleted by retention" in str(info.value) and "nothing was changed" in str(info.value)
        assert list(t.api.alias_targets(alias)) == [f"{alias}_v2"]
    finally:
        a.close()


def test_a_run_that_waits_for_the_lock_says_who_holds_it(search_target, caplog):
    """Issue 28 item 4: like PostgreSQL, MongoDB and Redis, the waiting run names the holder at once."""
    from polymigrate.errors import LockNotAcquired

    t = search_target
    holder, waiter = adapter(t, lease_ms=5000), adapter(t)
    try:
        with holder.lock("alice@laptop dag=pm_shop_production run=manual__1 try=1", 1):
            with caplog.at_level(logging.INFO, logger="polymigrate"):
                with pytest.raises(LockNotAcquired):
                    with waiter.lock("bob@host", 0.5):
                        pass
    finally:
        holder.close()
        waiter.close()
    waiting = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert waiting and "alice@laptop dag=pm_shop_production run=manual__1 try=1" in waiting[0], waiting
    assert "lease expires in" in waiting[0]


class _Proxy:
    """A TCP proxy to the real server; ``cut()`` closes it and every connection: to the run, the
    server is down (connection refused), while the server itself goes on for everyone else."""

    def __init__(self, host: str, port: int):
        import socket

        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list = []
        self.dead = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.dead:  # accept() may still return a connection made while the listener closed
                client.close()
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self):
        import socket

        self.dead = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the other thread on Linux
        except OSError:
            pass
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass


def test_a_server_that_stops_answering_mid_reindex_is_named_unreachable_not_a_lost_lock(search_target, tmp_path,
                                                                                       caplog):
    """Issue 28 item 4: with the server unreachable the run says so (and that a retry re-attaches to
    the task), not "polling task … failed (None)" then only "the migration lock was lost"."""
    from urllib.parse import urlsplit

    from polymigrate.adapters.elasticsearch.adapter import ElasticsearchAdapter
    from polymigrate.errors import TransientError

    t = search_target
    alias = t.name("products")
    seed(t, alias, 2000)
    where = urlsplit(t.url)
    proxy = _Proxy(where.hostname, where.port)
    url = t.url.replace(f"{where.hostname}:{where.port}", f"127.0.0.1:{proxy.port}")
    a = ElasticsearchAdapter.from_url(url, domain="shop", settings=t.settings(), lease_ms=1500, poll_seconds=0.2)
    files = {"1-copy.json": step_file({"create_index": {"index": f"{alias}_copy", "body": {"mappings": PRODUCTS_V2}}},
                                      {"reindex": {"source": alias, "dest": f"{alias}_copy", "slices": 1,
                                                   "requests_per_second": 200}})}
    migs = migrations(tmp_path / "m", files)
    threading.Timer(3.0, proxy.cut).start()
    caplog.set_level(logging.WARNING, logger="polymigrate")
    try:
        with pytest.raises(TransientError) as info:
            migrate(a, migs, ctx())
    finally:
        a.close()
    text = str(info.value)
    assert "not answer" in text and "re-attach" in text, text
    polls = [r.getMessage() for r in caplog.records if "polling task" in r.getMessage()]
    assert polls and all("(None)" not in p and "did not answer" in p for p in polls), polls
