"""Who reads which history (issue 27, item 6): the audit app answers each user for the (domain,
environment) pairs whose DAG they may read, on a real audit store.

``Access`` is what the auth manager answered (asked in ``get_access``; against a real API server
with FAB roles in tests/e2e/test_audit_access_roles.py); here it is given, so the filtering of every
view is tested on its own.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from polymigrate.audit import PostgresAuditStore
from polymigrate.blueprint import dag_id
from tests.audit_seed import seed_sample_history

pytestmark = pytest.mark.integration


@pytest.fixture
def seeded(pg_url):
    store = PostgresAuditStore(pg_url)
    store.ensure_schema()
    expected = seed_sample_history(store)
    yield store, expected
    store.close()


def client_for(pg_url, access):
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.core_api.security import get_user
    from polymigrate_airflow.ui.app import create_app, get_access, get_store

    app = create_app()

    def store():
        s = PostgresAuditStore(pg_url)
        yield s
        s.close()

    app.dependency_overrides[get_store] = store
    app.dependency_overrides[get_user] = lambda: object()
    app.dependency_overrides[get_access] = lambda: access
    return TestClient(app, root_path="/polymigrate")


def staging_only(domain: str):
    from polymigrate_airflow.ui.app import Access

    return Access("wanda", frozenset({(domain, "staging")}), "FabAuthManager")


def test_a_user_sees_only_the_history_of_the_dags_they_may_read(seeded, pg_url):
    store, expected = seeded
    prod_domain = expected["failed"][0]
    other = next(d for d in expected["domains"] if d != prod_domain)
    from polymigrate_airflow.ui.app import Access

    everything = client_for(pg_url, Access("cora", frozenset(store.scopes())))
    narrow = client_for(pg_url, staging_only(other))

    all_events = everything.get("/polymigrate/api/history").json()["events"]
    mine = narrow.get("/polymigrate/api/history").json()["events"]
    assert {(e["domain"], e["environment"]) for e in all_events} >= {(prod_domain, "production"), (other, "staging")}
    assert mine and {(e["domain"], e["environment"]) for e in mine} == {(other, "staging")}
    # the limit counts what the user may see: their whole history, not what is left of the newest 500
    assert len(mine) == len([e for e in all_events if (e["domain"], e["environment"]) == (other, "staging")])

    rows = narrow.get("/polymigrate/api/matrix").json()["rows"]
    assert rows and {(r["domain"], r["environment"]) for r in rows} == {(other, "staging")}

    page = narrow.get("/polymigrate/").text
    assert other in page and prod_domain not in page and "lock timeout on table orders" not in page
    assert "lock timeout on table orders" in everything.get("/polymigrate/").text


def test_exports_hold_only_what_the_user_may_read(seeded, pg_url):
    store, expected = seeded
    prod_domain = expected["failed"][0]
    other = next(d for d in expected["domains"] if d != prod_domain)
    narrow = client_for(pg_url, staging_only(other))

    lines = list(csv.DictReader(io.StringIO(narrow.get("/polymigrate/export?format=csv").text)))
    assert lines and {(r["domain"], r["environment"]) for r in lines} == {(other, "staging")}
    report = json.loads(narrow.get("/polymigrate/export?format=json").text)
    assert {(r["domain"], r["environment"]) for r in report["runs"]} == {(other, "staging")}
    html = narrow.get("/polymigrate/export?format=html").text
    assert prod_domain not in html and "lock timeout" not in html
    # asking for a scope one may not read is an empty selection, never someone else's history
    asked = narrow.get(f"/polymigrate/export?format=csv&domain={prod_domain}&environment=production").text
    assert list(csv.DictReader(io.StringIO(asked))) == []


def test_run_detail_of_a_dag_the_user_may_not_read_is_403_with_the_reason(seeded, pg_url):
    store, expected = seeded
    prod_domain = expected["failed"][0]
    other = next(d for d in expected["domains"] if d != prod_domain)
    prod_run = next(r.event.run_id for r in store.query(domain=prod_domain, environment="production"))
    own_run = next(r.event.run_id for r in store.query(domain=other, environment="staging"))
    narrow = client_for(pg_url, staging_only(other))

    denied = narrow.get(f"/polymigrate/api/runs/{prod_run}")
    assert denied.status_code == 403
    reason = denied.json()["reason"]
    assert dag_id(prod_domain, "production") in reason and "'wanda'" in reason and "FabAuthManager" in reason
    assert "compliance role" in reason
    page = narrow.get(f"/polymigrate/runs/{prod_run}")
    assert page.status_code == 403 and dag_id(prod_domain, "production") in page.text

    mine = narrow.get(f"/polymigrate/api/runs/{own_run}?dag_id={dag_id(other, 'staging')}")
    assert mine.status_code == 200
    assert {(r["domain"], r["environment"]) for r in mine.json()["runs"]} == {(other, "staging")}
    assert narrow.get(f"/polymigrate/runs/{own_run}").status_code == 200
    missing = narrow.get("/polymigrate/api/runs/manual__nope")
    assert missing.status_code == 404 and "manual__nope" in missing.json()["detail"]


def test_a_user_who_may_read_no_migration_dag_sees_an_empty_history(seeded, pg_url):
    from polymigrate_airflow.ui.app import Access

    nobody = client_for(pg_url, Access("nina", frozenset()))
    assert nobody.get("/polymigrate/api/history").json()["events"] == []
    assert nobody.get("/polymigrate/api/matrix").json()["rows"] == []
    assert list(csv.DictReader(io.StringIO(nobody.get("/polymigrate/export?format=csv").text))) == []


@pytest.fixture
def reader_url(seeded, pg_url):
    """A login that is only a member of the reader role, as a compliance officer's would be."""
    import uuid

    import psycopg
    from psycopg import sql

    login = f"pm_audit_r_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
    seeded[0].ensure_schema(grant_read_to=login)
    base, _, db = pg_url.rpartition("/")
    yield base.replace("postgres@", f"{login}@") + "/" + db
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(login)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))


def test_the_cli_report_reads_through_the_reader_role(seeded, reader_url, pg_url, tmp_path):
    import psycopg
    from typer.testing import CliRunner

    from polymigrate.audit.store import READER_ROLE
    from polymigrate.cli import app
    from polymigrate.errors import PermanentError
    from polymigrate.events import AuditEvent

    store, expected = seeded
    out = tmp_path / "report.csv"
    result = CliRunner().invoke(app, ["audit", "report", "--url", reader_url, "--from", "2000-01-01", "--format", "csv",
                                      "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(list(csv.DictReader(io.StringIO(out.read_text())))) == len(store.query())
    verified = CliRunner().invoke(app, ["audit", "verify", "--url", reader_url], catch_exceptions=False)
    assert verified.exit_code == 0 and "chain intact" in verified.output

    # the reader login can read and nothing else; the owner's URL read-only reads as the reader role too
    with psycopg.connect(reader_url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO polymigrate_audit.chain_head VALUES (true, 0, 'x')")
    with PostgresAuditStore(pg_url, read_only=True) as owner_reading:
        assert owner_reading.query(limit=1) and owner_reading.role == READER_ROLE
        with pytest.raises(PermanentError, match="read-only transaction"):
            owner_reading.emit(AuditEvent(kind="triggered", domain="d", environment="e", actor="x"))
    assert len(store.query()) == len(list(csv.DictReader(io.StringIO(out.read_text()))))  # nothing was added


def test_a_login_without_the_reader_role_gets_a_clear_refusal_from_the_cli(seeded, pg_url):
    import uuid

    import psycopg
    from psycopg import sql
    from typer.testing import CliRunner

    from polymigrate.cli import app

    login = f"pm_audit_n_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
    try:
        base, _, db = pg_url.rpartition("/")
        url = base.replace("postgres@", f"{login}@") + "/" + db
        result = CliRunner().invoke(app, ["audit", "report", "--url", url, "--format", "csv"], catch_exceptions=False)
        said = " ".join(result.output.split())
        assert result.exit_code == 2
        assert "cannot read the audit store" in said and "permission denied" in said
        assert "GRANT polymigrate_audit_reader TO <login>" in said and "--grant-read-to" in said
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))


def test_a_store_initialised_before_the_reader_role_still_reads(pg_url):
    """The reader role is cluster-wide: another database's init may have made it without grants in this
    one (a store created by an older polymigrate); a read-only session must not take it there."""
    from polymigrate.audit.store import READER_ROLE

    import psycopg
    from psycopg import sql

    with PostgresAuditStore(pg_url) as made:
        made.ensure_schema()
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as an older polymigrate left it: no reader grants
        role = sql.Identifier(READER_ROLE)
        conn.execute(sql.SQL("REVOKE ALL ON polymigrate_audit.events, polymigrate_audit.chain_head FROM {}").format(role))
        conn.execute(sql.SQL("REVOKE USAGE ON SCHEMA polymigrate_audit FROM {}").format(role))
    with PostgresAuditStore(pg_url, read_only=True) as old:
        assert old.query() == [] and old.role is None
    with PostgresAuditStore(pg_url) as owner:
        owner.ensure_schema()  # re-running init grants it
    with PostgresAuditStore(pg_url, read_only=True) as reader:
        assert reader.query() == [] and reader.role == READER_ROLE


def test_each_recent_run_links_to_its_full_report(seeded, pg_url):
    import html
    import re

    store, expected = seeded
    other = next(d for d in expected["domains"] if d != expected["failed"][0])
    narrow = client_for(pg_url, staging_only(other))
    links = re.findall(r'href="([^"]+)" class="run-report"', narrow.get("/polymigrate/").text)
    assert len(links) == 1 and links[0].startswith("/polymigrate/runs/")
    report = narrow.get(html.unescape(links[0]))
    assert report.status_code == 200 and other in report.text
