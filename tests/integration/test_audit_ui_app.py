"""The audit page's FastAPI app through starlette's TestClient, on a real audit store.

Authentication is Airflow's (tested against a running API server in tests/e2e/test_audit_ui.py);
here the user dependency is overridden so the behaviour of the views is tested on its own.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone

import pytest

from polymigrate.audit import PostgresAuditStore
from polymigrate.events import AuditEvent
from tests.audit_seed import BASE_URL, seed_sample_history

pytestmark = pytest.mark.integration


@pytest.fixture
def seeded(pg_url):
    store = PostgresAuditStore(pg_url)
    store.ensure_schema()
    expected = seed_sample_history(store)
    yield store, expected
    store.close()


@pytest.fixture
def client(seeded, pg_url):
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.core_api.security import get_user
    from polymigrate_airflow.ui.app import Access, create_app, get_access, get_store

    app = create_app()

    def store():
        s = PostgresAuditStore(pg_url)
        yield s
        s.close()

    app.dependency_overrides[get_store] = store
    app.dependency_overrides[get_user] = lambda: object()
    # who reads what is tested in test_audit_access.py; these tests read everything
    app.dependency_overrides[get_access] = lambda: Access("test", frozenset(seeded[0].scopes()))
    return TestClient(app, root_path="/polymigrate")


def test_matrix_shows_each_sample_domain_with_versions_pending_and_last_run(client, seeded):
    store, expected = seeded
    doc = client.get("/api/matrix").json()
    rows = {(r["domain"], r["environment"], r["region"]): r for r in doc["rows"]}
    assert {d for d, _, _ in rows} == set(expected["domains"])
    for (domain, env, region, tech), n in expected["pending"].items():
        assert rows[(domain, env, region)]["technologies"][tech]["pending"] == n
    for r in doc["rows"]:
        succeeded = store.query(domain=r["domain"], environment=r["environment"], region=r["region"],
                                kind="migration_succeeded")
        for tech, cell in r["technologies"].items():
            versions = [x.event.version for x in succeeded if x.event.technology == tech]
            assert cell["version"] == (max(versions, key=lambda s: [int(p) for p in s.replace("_", ".").split(".")])
                                       if versions else None)
    failed = rows[expected["failed"]]["last_run"]
    assert failed["outcome"] == "failed" and failed["url"].startswith(BASE_URL + "/dags/")
    assert all(r["last_run"]["outcome"] == "succeeded" for k, r in rows.items() if k[1] == "staging")
    # Regions the failed run planned but never reached say so, and still count their pending work.
    halted = [r for k, r in rows.items() if k[:2] == expected["failed"][:2] and k != expected["failed"]
              and r["last_run"]["outcome"] != "succeeded"]
    assert halted and all(r["last_run"]["outcome"] == "halted before this region" for r in halted)
    assert all(c["pending"] and c["version"] is None for r in halted for c in r["technologies"].values())


def test_page_renders_matrix_history_chart_and_export_links(client, seeded):
    _, expected = seeded
    html = client.get("/").text
    assert 'id="matrix"' in html and 'id="history"' in html and "<svg" in html
    for domain in expected["domains"]:
        assert f'data-domain="{domain}"' in html
    assert 'href="/polymigrate/export?' in html and "format=csv" in html
    assert "1 pending" in html and 'class="badge bad">failed' in html


def test_history_filters_by_scope_and_kind(client, seeded):
    _, expected = seeded
    domain, env, region = expected["failed"]
    events = client.get("/api/history", params={"environment": env, "region": region}).json()["events"]
    assert events and {(e["environment"], e["region"]) for e in events} == {(env, region)}
    events = client.get("/api/history", params={"kind": "approved"}).json()["events"]
    assert sorted({e["details"]["by"] for e in events}) == ["dave", "erin"]
    old = client.get("/api/history", params={"from": "2001-01-01", "to": "2001-01-31"}).json()["events"]
    assert old == []


def test_export_downloads_the_filtered_selection(client, seeded):
    store, expected = seeded
    domain = expected["domains"][0]
    response = client.get("/export", params={"format": "csv", "domain": domain})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith('attachment; filename="polymigrate-audit-')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == len(store.query(domain=domain)) and {r["domain"] for r in rows} == {domain}
    html = client.get("/export", params={"format": "html"})
    assert "Approved by</dt><dd>dave, erin" in html.text
    assert client.get("/export", params={"format": "xml"}).status_code == 400


def test_unconfigured_store_gives_a_page_saying_how_to_fix_it(monkeypatch):
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.core_api.security import get_user
    from polymigrate_airflow.ui.app import create_app

    monkeypatch.delenv("AIRFLOW_CONN_POLYMIGRATE_AUDIT", raising=False)
    app = create_app()
    app.dependency_overrides[get_user] = lambda: object()
    client = TestClient(app)
    response = client.get("/")
    assert response.status_code == 503
    assert "polymigrate_audit" in response.text and "AIRFLOW_CONN_POLYMIGRATE_AUDIT" in response.text
    assert client.get("/api/matrix").json()["connection"] == "polymigrate_audit"


def test_unreachable_store_is_reported_not_crashed(monkeypatch):
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.core_api.security import get_user
    from polymigrate_airflow.ui.app import create_app

    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_AUDIT", "postgresql://postgres@127.0.0.1:1/audit")
    app = create_app()
    app.dependency_overrides[get_user] = lambda: object()
    response = TestClient(app).get("/")
    assert response.status_code == 503 and "cannot read the audit store" in response.text


def test_history_shows_the_release_phase_of_a_migration(client, seeded):
    store, _ = seeded
    store.emit(AuditEvent(kind="migration_succeeded", domain="social-commerce", environment="staging",
                          region="western_europe", technology="postgresql", version="9",
                          script="V9__drop_first_name.sql", details={"phase": "contract"}))
    html = client.get("/").text
    assert "V9__drop_first_name.sql<div class=\"small\">phase: contract</div>" in html


def test_page_shows_failed_verify_checks_and_the_latest_drift_report(client, seeded):
    store, _ = seeded
    now = datetime.now(timezone.utc)
    check = {"name": "invalid indexes", "ok": False, "technology": "postgresql",
             "detail": "1 INVALID index(es) in schema shop: orders_total_unique on orders"}
    store.emit(AuditEvent(kind="verify_failed", domain="shop", environment="staging", region="r1", run_id="run-v",
                          actor="ann@airflow", at=now - timedelta(minutes=5),
                          details={"region": "r1", "checks": [{"name": "ledger equals plan", "ok": True,
                                                               "technology": "postgresql", "detail": ""}, check]}))
    diff = {"technology": "postgresql", "region": "r1", "change": "added", "before": None, "since": now.isoformat()}
    for n, objects in enumerate((["tables.orders.columns.old"], ["tables.orders.columns.note"])):
        store.emit(AuditEvent(kind="drift", domain="shop", environment="staging", run_id=f"drift-{n}",
                              at=now - timedelta(minutes=2 - n), details={
                                  "count": len(objects), "targets": {"r1/postgresql": {"differences": 1}},
                                  "differences": [{**diff, "object": o, "after": {"type": "text"}} for o in objects]}))
    html = client.get("/", params={"domain": "shop"}).text
    drift = html.split('id="drift"')[1].split("</table>")[0]
    assert "tables.orders.columns.note" in drift and '{&#34;type&#34;: &#34;text&#34;}' in drift
    assert "columns.old" not in drift  # only the newest report of each domain and environment
    history = html.split('id="history"')[1]
    assert "orders_total_unique on orders" in history and "verify_failed" in history
    runs = client.get("/export", params={"format": "json", "domain": "shop"}).json()
    [run] = [r for r in runs["runs"] if r["run_id"] == "run-v"]
    assert run["outcome"] == "verification failed"
    assert run["notes"] == ["verification failed in r1: postgresql invalid indexes: " + check["detail"]]


def test_page_shows_the_staging_trend_next_to_the_production_estimate(client, seeded):
    store, _ = seeded
    now = datetime.now(timezone.utc)
    for n, ms in enumerate((800, 1200, 1900)):  # three nightly rehearsals, the backfill slowing down
        store.emit(AuditEvent(kind="migration_succeeded", domain="trendy", environment="staging", region="s1",
                              technology="postgresql", version="7", script="V7__backfill.sql", checksum=7,
                              duration_ms=ms, run_id=f"nightly-{n}", at=now - timedelta(days=3 - n)))
    store.emit(AuditEvent(kind="approval_requested", domain="trendy", environment="production", run_id="prod-1",
                          at=now - timedelta(minutes=1), details={"changeset_hash": "c" * 64, "rehearsal": {
                              "environment": "staging", "regions": {"p1": {"seconds": 1.9, "files": 1,
                                                                           "never_rehearsed": [], "slowest": []}}}}))
    html = client.get("/", params={"domain": "trendy"}).text
    head = html.split('class="trend-head"')[1].split("</h3>")[0]
    assert "trendy in production: estimate from staging" in head
    assert 'p1 <span class="estimate">~1.9 s</span>' in html
    row = html.split('data-script="V7__backfill.sql"')[1].split("</tr>")[0]
    assert '<td class="runs">800 ms · 1.2 s · 1.9 s' in row and "<td>1.9 s</td>" in row and "not yet" in row
    assert 'id="trend-empty"' in client.get("/", params={"domain": "nobody"}).text
