"""Data governance through the command layer (what the DAG's tasks and the CLI call), on real
PostgreSQL, Redis and a MongoDB-protocol server, with a real audit store (docs/governance.md).

One production-like environment: r1 (GDPR) and r2 (POPIA, no PCI scope); one approval from a dba
plus, for a regulated change, a compliance sign-off.
"""

from __future__ import annotations

import json
import textwrap

import psycopg
import pymongo
import pytest
import redis

from polymigrate.audit import PostgresAuditStore
from polymigrate.audit.report import render_json, select
from polymigrate.commands import EnvironmentConnector, RunParams, Who, open_run
from polymigrate.commands.approval import Pending, record_answer, request_approval
from polymigrate.commands.context import Grant
from polymigrate.commands.drift import drift_domain
from polymigrate.commands.verbs import migrate_target, plan, validate, verify_region
from polymigrate.connections import env_var
from polymigrate.errors import PermanentError, PolicyRefused
from tests.conftest import REDIS_DB, REDIS_URL

pytestmark = pytest.mark.integration

PRODUCTION = """\
regions:
  r1: {jurisdictions: [GDPR]}
  r2: {jurisdictions: [POPIA]}
policy:
  approvals: {required: 1, roles: [dba], triggerer_may_approve: false, compliance_roles: [compliance]}
  lint_block_at: medium
  destructive_allowed: true
  residency:
    - {name: pci-scope, forbid: [pci], regions: [r2], reason: PCI DSS scope covers r1 only}
"""
V1 = "CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, nickname text);\n"
V2 = ("-- polymigrate:lint-ignore ban-drop-column reason: contact moved to the CRM; nothing reads email\n"
      "ALTER TABLE customers DROP COLUMN email;\n")
V3 = "CREATE TABLE payments (id bigint PRIMARY KEY, pan text NOT NULL);\n"
CACHE = """local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3] .. 'card:*', 'COUNT', 100)
for _, key in ipairs(res[2]) do
  redis.call('HSET', key, 'pan', 'x')
end
return {res[1], 0}
"""


class Shop:
    def __init__(self, root, urls, audit, monkeypatch):
        self.root, self.urls, self.audit = root, urls, audit
        for (tech, region), url in urls.items():
            monkeypatch.setenv(env_var(f"polymigrate_{tech}_production_{region}"), url)
        (root / "environments").mkdir(parents=True)
        (root / "environments" / "production.yaml").write_text(PRODUCTION)
        (root / "approvers.yaml").write_text("users:\n  ann: [dba]\n  cora: [compliance]\n  dev1: [developer]\n")
        self.labels: dict[str, dict] = {}
        self.technologies = {"postgresql": {"schema": "shop"}}

    def domain(self) -> None:
        (self.root / "shop").mkdir(exist_ok=True)
        (self.root / "shop" / "domain.yaml").write_text(json.dumps(
            {"technologies": self.technologies, "labels": self.labels}))

    def file(self, tech: str, name: str, text: str) -> None:
        (self.root / "shop" / tech).mkdir(parents=True, exist_ok=True)
        (self.root / "shop" / tech / name).write_text(text)

    def run(self, run_id="manual__1", **params):
        self.domain()
        return open_run(self.root, "shop", "production", params=RunParams(**params),
                        who=Who("dev1@airflow", "dev1", run_id), connector=EnvironmentConnector(),
                        audit=lambda: self.audit)

    def events(self, kind: str):
        with PostgresAuditStore(self.audit) as store:
            return [r.event for r in store.query(kind=kind)]


@pytest.fixture
def shop(tmp_path, make_pg_database, monkeypatch):
    urls = {("postgresql", r): make_pg_database(f"pm_gov_{r}") for r in ("r1", "r2")}
    return Shop(tmp_path / "specs", urls, make_pg_database("pm_gov_audit"), monkeypatch)


def _answer(user: str) -> dict:
    return {"user": user, "decision": "approve", "hash": "", "at": "2099-01-01T00:00:00+00:00",
            "comment": f"reviewed by {user}"}


def test_pii_needs_a_label_then_its_drop_waits_for_compliance_and_the_export_lists_who(shop):
    shop.file("postgresql", "V1__customers.sql", V1)
    run = shop.run(run_id="manual__0")
    with pytest.raises(PolicyRefused) as err:
        validate(run)
    run.close()
    assert "personal-data-unlabelled" in str(err.value) and "customers.email looks like an e-mail address" in str(err.value)
    assert "'postgresql:customers.email': {kind: pii, level: medium}" in str(err.value)

    shop.labels = {"postgresql:customers.email": {"kind": "pii", "level": "high"}}
    shop.file("postgresql", "V2__drop_email.sql", V2)
    run = shop.run()
    try:
        summary = validate(run)
        assert [(r["action"], r["object"]) for r in summary["regulated"]] == [("drops", "postgresql:customers.email")]
        assert summary["regulated"][0]["regulations"] == {"r1": ["GDPR"], "r2": ["POPIA"]}
        pending = request_approval(run, summary)
        assert isinstance(pending, Pending) and pending.request["eligible"] == ["ann", "cora"]
        assert "Compliance sign-off required" in pending.body and "drops `postgresql:customers.email`" in pending.body
        ann = {**_answer("ann"), "hash": summary["changeset_hash"]}
        after_ann = record_answer(run, pending.request, [ann], summary)
        assert isinstance(after_ann, Pending) and "needs a compliance sign-off" in after_ann.decision.reasons[-1]
        cora = {**_answer("cora"), "hash": summary["changeset_hash"]}
        granted = record_answer(run, pending.request, [ann, cora], summary)
        assert granted["approved_by"] == ["ann"] and granted["signed_off_by"] == ["cora"]
        result = plan(run, Grant(summary["changeset_hash"], ("ann",), how="approvals"))
        for region in ("r1", "r2"):
            migrate_target(run, region, "postgresql", plan_hash=result.hash)
            verify_region(run, region, ["postgresql"])
    finally:
        run.close()
    [sign_off] = [e for e in shop.events("approved") if e.details.get("sign_off")]
    assert sign_off.details["by"] == "cora" and sign_off.details["regulated"][0]["object"] == "postgresql:customers.email"

    with PostgresAuditStore(shop.audit) as store:
        records, runs = select(store, environment="production")
        doc = json.loads(render_json(records, runs=runs))
    from polymigrate.audit.report import render_html
    html = render_html(records, runs=runs)
    assert "<h3>GDPR: 1 regulated change(s)</h3>" in html and "<h3>POPIA: 1 regulated change(s)</h3>" in html
    assert "<td>ann</td><td>cora</td>" in html
    [gdpr] = doc["compliance"]["regulations"]["GDPR"]
    assert (gdpr["region"], gdpr["action"], gdpr["object"]) == ("r1", "drops", "postgresql:customers.email")
    assert gdpr["approved_by"] == ["ann"] and gdpr["signed_off_by"] == ["cora"] and gdpr["outcome"] == "succeeded"
    assert doc["compliance"]["regulations"]["POPIA"][0]["region"] == "r2"
    from polymigrate_airflow.ui.page import render_page  # the audit page shows the same section
    page = render_page(filters={}, technologies=[], rows=[], history=records, chart="", limit=100, runs=runs)
    assert '<tr data-regulation="GDPR"><td>GDPR</td><td>shop</td><td>production / r1</td>' in page
    assert "<td>ann</td><td>cora</td>" in page
    [approved] = [r for r in doc["runs"] if r["run_id"] == "manual__1"]
    assert approved["approved_by"] == ["ann"] and approved["signed_off_by"] == ["cora"]
    assert [x["object"] for x in doc["compliance"]["labelled_objects"]["production/r1"]] == \
        ["postgresql:customers.email"]


def test_a_pci_change_is_refused_by_plan_in_a_region_without_pci_scope(shop):
    shop.labels = {"postgresql:payments.pan": {"kind": "pci", "level": "critical"}}
    shop.file("postgresql", "V3__payments.sql", V3)
    run = shop.run()
    try:
        summary = validate(run)
        with pytest.raises(PolicyRefused) as err:
            plan(run, Grant(summary["changeset_hash"]))
        assert "residency rule 'pci-scope' forbids pci data in region r2" in str(err.value)
        assert "V3__payments.sql touches postgresql:payments.pan" in str(err.value) and "r1" not in str(err.value).split("region")[1][:4]
    finally:
        run.close()
    [refused] = [e for e in shop.events("refused") if e.details.get("gate") == "residency"]
    assert refused.details["violations"][0]["region"] == "r2"
    run = shop.run(run_id="manual__2", regions=["r1"])  # where the rule allows it, the plan passes
    try:
        assert [t.region for t in plan(run, Grant(summary["changeset_hash"])).targets] == ["r1"]
    finally:
        run.close()
    with PostgresAuditStore(shop.audit) as store:
        records, runs = select(store, environment="production")
    violations = json.loads(render_json(records, runs=runs))["compliance"]["violations"]
    assert [(v["what"], v["rule"], v["region"]) for v in violations] == [("residency", "pci-scope", "r2")]


def test_a_card_number_copied_into_the_redis_cache_without_its_label_is_refused(shop, monkeypatch):
    shop.labels = {"postgresql:payments.pan": {"kind": "pci", "level": "critical"}}
    shop.technologies["redis"] = {"key_prefix": "shop:"}
    shop.file("postgresql", "V3__payments.sql", V3)
    shop.file("redis", "1-cache-cards.lua", CACHE)
    run = shop.run()
    with pytest.raises(PolicyRefused) as err:
        validate(run)
    run.close()
    assert "label-not-carried" in str(err.value) and "card:*" in str(err.value)
    assert "postgresql:payments.pan (pci/critical)" in str(err.value)
    shop.labels["redis:card:*"] = {"kind": "pci", "level": "critical"}
    run = shop.run(run_id="manual__2")
    try:
        validate(run)
    finally:
        run.close()


def test_a_mongo_ttl_retention_is_verified_then_dropped_by_hand_and_reported_by_drift(shop, real_mongodb,
                                                                                       make_mongo_database, monkeypatch):
    # FerretDB (this machine's MongoDB-protocol server) refuses TTL indexes: a real MongoDB runs this
    url = make_mongo_database("pm_gov_tracking")
    monkeypatch.setenv(env_var("polymigrate_mongodb_production_r1"), url)
    shop.technologies = {"mongodb": {"database": pymongo.uri_parser.parse_uri(url)["database"]}}
    shop.labels = {"mongodb:pings.courier_phone": {"kind": "pii", "level": "medium", "retention": "30d"}}
    shop.file("mongodb", "1-pings.json", json.dumps({"commands": [
        {"create": "pings"},
        {"createIndexes": "pings", "indexes": [{"key": {"at": 1}, "name": "expire_30_days",
                                                "expireAfterSeconds": 2592000}]}]}))
    (shop.root / "environments" / "production.yaml").write_text(PRODUCTION.replace("  r2: {jurisdictions: [POPIA]}\n", ""))
    run = shop.run()
    try:
        summary = validate(run)
        migrate_target(run, "r1", "mongodb", plan_hash=None)
        out = verify_region(run, "r1", ["mongodb"])
    finally:
        run.close()
    assert out["failed"] == 0
    checks = {c["name"]: c for c in shop.events("verified")[-1].details["checks"]}
    assert checks["retention mongodb:pings.courier_phone"]["ok"]
    assert "TTL index expire_30_days" in checks["retention mongodb:pings.courier_phone"]["detail"]
    assert summary.get("regulated") is None

    client = pymongo.MongoClient(url)
    client.get_default_database()["pings"].drop_index("expire_30_days")  # by hand, outside any migration
    client.close()
    run = shop.run(run_id="drift__1")
    try:
        result = drift_domain(run)
    finally:
        run.close()
    assert result["count"] >= 1
    [drift] = shop.events("drift")
    found = [d for d in drift.details["differences"] if d["object"] == "retention mongodb:pings.courier_phone"]
    assert found and "no TTL index" in found[0]["after"]
    with PostgresAuditStore(shop.audit) as store:
        records, runs = select(store, environment="production")
    violations = json.loads(render_json(records, runs=runs))["compliance"]["violations"]
    assert [(v["what"], v["label"]) for v in violations] == [("retention (drift)", "mongodb:pings.courier_phone")]


def test_redis_keys_without_a_ttl_fail_the_retention_check(shop, monkeypatch):
    monkeypatch.setenv(env_var("polymigrate_redis_production_r1"), f"{REDIS_URL}/{REDIS_DB}")
    client = redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}")
    client.flushdb()
    client.set("shop:session:1", "a", ex=3600)
    client.set("shop:session:2", "b")  # never expires
    shop.technologies = {"redis": {"key_prefix": "shop:"}}
    shop.labels = {"redis:session:*": {"kind": "secret", "level": "high", "retention": "1d"}}
    shop.file("redis", "1-noop.lua", "return {'0', 0}\n")
    (shop.root / "environments" / "production.yaml").write_text(
        PRODUCTION.replace("  r2: {jurisdictions: [POPIA]}\n", "") + "  verify_failures: fail\n")
    run = shop.run()
    try:
        migrate_target(run, "r1", "redis", plan_hash=None)
        with pytest.raises(PermanentError) as err:
            verify_region(run, "r1", ["redis"])
    finally:
        run.close()
        client.flushdb()
        client.close()
    assert "retention redis:session:*" in str(err.value) and "1 of 2 key(s) matching shop:session:* never expire" \
        in str(err.value)


def test_a_mongo_collection_without_a_ttl_index_fails_its_retention_check(shop, make_mongo_database, monkeypatch):
    """The same check where no TTL index enforces the label (this runs on FerretDB too): verify warns
    under this policy, and the compliance export lists the violation."""
    url = make_mongo_database("pm_gov_tracking")
    monkeypatch.setenv(env_var("polymigrate_mongodb_production_r1"), url)
    shop.technologies = {"mongodb": {"database": pymongo.uri_parser.parse_uri(url)["database"]}}
    shop.labels = {"mongodb:pings.courier_phone": {"kind": "pii", "level": "medium", "retention": "30d"}}
    shop.file("mongodb", "1-pings.json", json.dumps({"commands": [{"create": "pings"}]}))
    (shop.root / "environments" / "production.yaml").write_text(
        PRODUCTION.replace("  r2: {jurisdictions: [POPIA]}\n", "") + "  verify_failures: warn\n")
    run = shop.run()
    try:
        migrate_target(run, "r1", "mongodb", plan_hash=None)
        assert verify_region(run, "r1", ["mongodb"])["failed"] == 1
    finally:
        run.close()
    [check] = [c for c in shop.events("verified")[-1].details["checks"] if c["name"].startswith("retention")]
    assert not check["ok"] and "pings: no TTL index enforces the label's 30d" in check["detail"]
    assert "no TTL index" in check["detail"] and "expireAfterSeconds ≤ 2592000" in check["detail"]
    with PostgresAuditStore(shop.audit) as store:
        records, runs = select(store, environment="production")
    violations = json.loads(render_json(records, runs=runs))["compliance"]["violations"]
    assert [(v["what"], v["region"], v["label"]) for v in violations] == [("retention", "r1", "mongodb:pings.courier_phone")]


def test_lint_url_suggests_a_label_from_a_bounded_sample_of_the_values_a_backfill_copies(make_pg_database, tmp_path):
    """``lint --url``: nothing in the names says card number, the values do (Luhn-valid, python-stdnum)."""
    from typer.testing import CliRunner

    from polymigrate.cli import app

    url = make_pg_database("pm_gov_lint")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE SCHEMA shop; CREATE TABLE shop.orders (id bigint PRIMARY KEY, legacy_ref text)")
        c.execute("INSERT INTO shop.orders SELECT g, CASE WHEN g % 2 = 0 THEN '4111 1111 1111 1111' "
                  "ELSE '5500 0055 5555 5559' END FROM generate_series(1, 500) g")
    specs = tmp_path / "specs"
    (specs / "environments").mkdir(parents=True)
    (specs / "environments" / "production.yaml").write_text("regions: {r1: null}\n")
    (specs / "shop" / "postgresql").mkdir(parents=True)
    (specs / "shop" / "domain.yaml").write_text("technologies: {postgresql: {schema: shop}}\nlabels: {}\n")
    (specs / "shop" / "postgresql" / "V1__card_ref.sql").write_text(
        "ALTER TABLE orders ADD COLUMN card_ref text;\nUPDATE orders SET card_ref = legacy_ref;\n")
    out = CliRunner().invoke(app, ["lint", str(specs), "--url", url, "--json", "--threshold", "critical"])
    findings = [f for f in json.loads(out.stdout)["domains"]["shop"]["findings"]
                if f["rule"] == "personal-data-unlabelled"]
    assert [(f["line"], f["message"]) for f in findings] == [
        (2, "orders.card_ref is filled from orders.legacy_ref, whose values (200 of 200 sampled) look like card "
            "numbers (Luhn-valid) (pci), and has no label")]
    assert "'postgresql:orders.card_ref': {kind: pci, level: critical}" in findings[0]["fix"]
    offline = CliRunner().invoke(app, ["lint", str(specs), "--json", "--threshold", "critical"])
    assert not [f for f in json.loads(offline.stdout)["domains"]["shop"]["findings"]
                if f["rule"] == "personal-data-unlabelled"], "without --url the names alone say nothing here"


def test_a_search_index_under_no_ism_policy_fails_its_retention_check(opensearch_target):
    """This OpenSearch is the minimal distribution: no index-management plugin, so nothing there can
    delete old documents; the check says so instead of passing."""
    from polymigrate.governance.enforce import retention_checks
    from polymigrate.governance.labels import LabelIndex
    from polymigrate.spec.governance import Label
    from tests.integration.adapters.es_helpers import adapter as es_adapter

    t = opensearch_target
    t.api.create_index(t.name("people_v1"), {"aliases": {t.name("people"): {}}})
    a = es_adapter(t)
    try:
        [check] = retention_checks(a, LabelIndex.of({f"elasticsearch:{t.name('people')}.email":
                                                     Label(kind="pii", retention="30d")}))
    finally:
        a.close()
    assert not check.ok and check.name == f"retention elasticsearch:{t.name('people')}.email"
    assert "no ISM (index-management plugin) answers" in check.detail or "under no ISM/ILM policy" in check.detail


def test_a_postgresql_retention_is_enforced_by_a_declared_purge_function(shop):
    shop.labels = {"postgresql:customers.email": {"kind": "pii", "level": "high", "retention": "2y",
                                                  "purged_by": "shop.purge_customers"}}
    shop.file("postgresql", "V1__customers.sql", V1 + "ALTER TABLE customers ADD COLUMN closed_at timestamptz;\n"
              "CREATE FUNCTION purge_customers() RETURNS bigint LANGUAGE sql AS $$\n"
              "  WITH gone AS (DELETE FROM customers WHERE closed_at < now() - interval '2 years' RETURNING 1)\n"
              "  SELECT count(*) FROM gone $$;\n")
    (shop.root / "environments" / "production.yaml").write_text(
        PRODUCTION.replace("  r2: {jurisdictions: [POPIA]}\n", "") + "  verify_failures: warn\n")
    run = shop.run()
    try:
        migrate_target(run, "r1", "postgresql", plan_hash=None)
        assert verify_region(run, "r1", ["postgresql"])["failed"] == 0
        shop.labels["postgresql:customers.email"].pop("purged_by")
        run2 = shop.run(run_id="manual__2")
        try:
            assert verify_region(run2, "r1", ["postgresql"])["failed"] == 1
        finally:
            run2.close()
    finally:
        run.close()
    first, second = [{c["name"]: c for c in e.details["checks"]} for e in shop.events("verified")]
    assert first["retention postgresql:customers.email"]["detail"] == "purged by shop.purge_customers"
    assert "no purge declared for a 2y retention" in second["retention postgresql:customers.email"]["detail"]


def test_a_redis_retention_verified_then_undone_by_hand_is_reported_by_drift(shop, monkeypatch):
    """What the MongoDB TTL case shows on a real MongoDB, on this machine's Redis: verified, a key made
    permanent by hand (PERSIST), the nightly drift names the label."""
    monkeypatch.setenv(env_var("polymigrate_redis_production_r1"), f"{REDIS_URL}/{REDIS_DB}")
    client = redis.Redis.from_url(f"{REDIS_URL}/{REDIS_DB}")
    client.flushdb()
    client.set("shop:session:1", "a", ex=3600)
    shop.technologies = {"redis": {"key_prefix": "shop:"}}
    shop.labels = {"redis:session:*": {"kind": "secret", "level": "high", "retention": "1d"}}
    shop.file("redis", "1-noop.lua", "return {'0', 0}\n")
    (shop.root / "environments" / "production.yaml").write_text(PRODUCTION.replace("  r2: {jurisdictions: [POPIA]}\n", ""))
    run = shop.run()
    try:
        migrate_target(run, "r1", "redis", plan_hash=None)
        assert verify_region(run, "r1", ["redis"])["failed"] == 0
        client.persist("shop:session:1")  # by hand, outside any migration
        drift_run = shop.run(run_id="drift__1")
        try:
            result = drift_domain(drift_run)
        finally:
            drift_run.close()
    finally:
        run.close()
        client.flushdb()
        client.close()
    differences = shop.events("drift")[-1].details["differences"]
    assert result["count"] == 2 and differences[0]["object"] == "shapes.shop:session:* (string).ttl"  # the snapshot's
    [d] = [d for d in differences if d["object"].startswith("retention")]  # and the label's own line
    assert d["object"] == "retention redis:session:*" and "1 of 1 key(s) matching shop:session:* never expire" in d["after"]
