"""A filtered export tells each run whole: who triggered and approved it and what it applied,
whatever the filter left out of the event list (the page's export and ``polymigrate audit report``)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from polymigrate.audit import PostgresAuditStore
from polymigrate.cli import app as cli
from tests.audit_seed import overridden_production_run, scheduled_staging_run

pytestmark = pytest.mark.integration


@pytest.fixture
def store_url(pg_url):
    store = PostgresAuditStore(pg_url)
    store.ensure_schema()
    for e in scheduled_staging_run() + overridden_production_run():
        e.at = e.at.replace(year=2026)
        store.emit(e)
    store.close()
    return pg_url


@pytest.fixture
def client(store_url):
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.core_api.security import get_user
    from polymigrate_airflow.ui.app import create_app, get_access, get_store
    from tests.audit_seed import reads_everything

    app = create_app()

    def store():
        s = PostgresAuditStore(store_url)
        yield s
        s.close()

    app.dependency_overrides[get_store] = store
    app.dependency_overrides[get_user] = lambda: object()
    app.dependency_overrides[get_access] = reads_everything()  # who reads what: test_audit_access.py
    return TestClient(app, root_path="/polymigrate")


PERIOD = {"from": "2026-11-29", "to": "2026-12-01"}


def test_region_filtered_html_export_still_says_what_the_run_applied_and_who_triggered_it(client):
    html = client.get("/export", params={**PERIOD, "format": "html", "environment": "staging",
                                         "region": "western_europe"}).text
    assert "No migration was applied" not in html
    assert "V2.1__create_countries.sql" in html
    assert "Regions</dt><dd>western_europe" in html and "north_africa" not in html.split("Regions</dt>")[1].split("</dd>")[0]
    assert "Triggered by</dt><dd>the schedule</dd>" in html


def test_kind_filtered_json_export_keeps_whole_runs(client):
    doc = client.get("/export", params={**PERIOD, "format": "json", "kind": "approved"}).json()
    assert {e["kind"] for e in doc["events"]} == {"approved"}
    runs = {r["environment"]: r for r in doc["runs"]}
    assert len(runs["staging"]["migrations"]) == 3 and runs["staging"]["regions"] == ["north_africa", "western_europe"]
    assert runs["production"]["overridden_by"] == ["ann", "cid", "bob"]
    assert runs["production"]["triggered_by"] == "admin"


def test_page_history_names_people_once_and_links_to_this_airflow(client, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080")
    html = client.get("/", params=PERIOD).text
    assert "@airflow" not in html and "DagRunType" not in html
    assert "http://127.0.0.1:41111" not in html and "http://127.0.0.1:8080/dags/migrate__common__staging/runs/" in html


def test_cli_report_filtered_by_region(store_url, tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["audit", "report", "--url", store_url, "--from", "2026-11-29", "--to", "2026-11-30",
                                      "-r", "western_europe", "-f", "json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    runs = json.loads(out.read_text())["runs"]
    assert [(r["triggered_by"], len(r["migrations"])) for r in runs] == [("the schedule", 3)]
