"""A run through the real executor and PostgreSQL adapter, recorded in the audit store, reported.

The Airflow steps around execution (trigger, approval, plan, verify) are emitted the way the
operators emit them; the migrations themselves run for real against two regional databases.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap

import psycopg
import pytest
from typer.testing import CliRunner

from polymigrate.audit import PostgresAuditStore
from polymigrate.audit.report import fmt_ms
from polymigrate.cli import app
from polymigrate.commands import load_domain, plan_domain
from polymigrate.adapters import adapter_class
from polymigrate.errors import PermanentError
from polymigrate.events import AuditEvent
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext

pytestmark = pytest.mark.integration

DAG = "migrate__shop__staging"
REGIONS = ("western_europe", "north_africa")


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")


@pytest.fixture
def specs(tmp_path):
    write(tmp_path / "environments/staging.yaml", """
        regions: {western_europe: {}, north_africa: {}}
        policy: {approvals: {required: 2}}
    """)
    write(tmp_path / "shop/domain.yaml", "technologies: {postgresql: {schema: shop}}\n")
    write(tmp_path / "shop/postgresql/V1__create_orders.sql", "CREATE TABLE orders (id bigint PRIMARY KEY);\n")
    write(tmp_path / "shop/postgresql/V2__add_total.sql",
          "ALTER TABLE orders ADD COLUMN total numeric;\nSELECT pg_sleep(0.05);\n")
    return tmp_path


def run_like_airflow(specs, targets: dict[str, str], store: PostgresAuditStore, run_id: str) -> None:
    project, domain, catalog = load_domain(specs, "shop")
    env = project.environments["staging"]
    common = dict(domain="shop", environment="staging", run_id=run_id, dag_id=DAG)

    def emit(kind: str, actor: str = "carol@airflow", **kw) -> None:
        store.emit(AuditEvent(kind=kind, actor=actor, **common, **kw))

    def connect(region: str, tech: str):
        return adapter_class(tech).from_url(targets[region], domain="shop", settings=domain.technologies[tech])

    emit("triggered", task_id="validate", details={"conf": {"dry_run": False}})
    emit("validated", task_id="validate", details={"findings": [], "risk": "low"})
    emit("approval_requested", task_id="approve", details={"required": 2})
    emit("approved", task_id="approve", details={"by": "dave"})
    emit("approved", task_id="approve", details={"by": "erin"})
    plan = plan_domain(project, domain, catalog, env, connect)
    emit("planned", task_id="plan", details=plan.summary())
    migrations = catalog.migrations["postgresql"]
    for region in REGIONS:
        ctx = RunContext(actor="carol@airflow", region=region, task_id=f"{region}.postgresql", try_number=1, **common)
        adapter = connect(region, "postgresql")
        try:
            migrate(adapter, migrations, ctx, sink=store)
        finally:
            adapter.close()
        emit("verified", task_id=f"{region}.verify", region=region, details={"region": region})


@pytest.fixture
def recorded(specs, make_pg_database, pg_url):
    targets = {r: make_pg_database("pm_audit_target") for r in REGIONS}
    store = PostgresAuditStore(pg_url)
    store.ensure_schema()
    run_like_airflow(specs, targets, store, "manual__2026-11-02T01:00:00+00:00")
    yield store, targets
    store.close()


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_run_records_the_full_event_sequence(recorded):
    store, _ = recorded
    kinds = [r.event.kind for r in store.query()]
    per_region = ["migration_started", "migration_succeeded"] * 2 + ["verified"]
    assert kinds == ["triggered", "validated", "approval_requested", "approved", "approved", "planned",
                     *per_region, *per_region]
    started = store.query(kind="migration_started")
    assert {(r.event.region, r.event.script) for r in started} == {
        (region, script) for region in REGIONS for script in ("V1__create_orders.sql", "V2__add_total.sql")}
    assert all(r.event.dag_id == DAG and r.event.task_id and r.event.try_number == 1 for r in started)


def test_report_names_triggerer_approvers_each_migration_and_its_duration(recorded, pg_url, tmp_path):
    store, _ = recorded
    out = tmp_path / "report.html"
    result = invoke("audit", "report", "--url", pg_url, "--from", "2000-01-01", "--format", "html", "-o", str(out))
    assert result.exit_code == 0, result.output
    html = out.read_text()
    assert "Triggered by</dt><dd>carol</dd>" in html  # one name per person: approvers are Airflow user names too
    assert "Approved by</dt><dd>dave, erin" in html
    assert '<span class="badge ok">succeeded</span>' in html
    assert "<svg" in html and "western_europe" in html and "<script" not in html
    for rec in store.query(kind="migration_succeeded"):
        row = (f"<tr><td>{rec.event.region}</td><td>postgresql</td><td>{rec.event.script}</td>"
               f"<td>{rec.event.version}</td>")
        assert row in html
        assert fmt_ms(rec.event.duration_ms) in html.split(row, 1)[1].split("</tr>", 1)[0]

    result = invoke("audit", "report", "--url", pg_url, "--from", "2000-01-01", "--format", "json")
    doc = json.loads(result.stdout)
    (run,) = doc["runs"]
    assert (run["triggered_by"], run["approved_by"], run["outcome"]) == ("carol", ["dave", "erin"], "succeeded")
    assert run["plan_hash"] and run["regions"] == sorted(REGIONS)
    v2 = [m for m in run["migrations"] if m["script"] == "V2__add_total.sql"]
    assert len(v2) == 2 and all(m["duration_ms"] >= 50 and m["outcome"] == "succeeded" for m in v2)


def test_report_filters_and_csv_lists_every_event_with_its_hash(recorded, pg_url):
    store, _ = recorded
    result = invoke("audit", "report", "--url", pg_url, "--from", "2000-01-01", "--region", "north_africa",
                    "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["kind"] for r in rows] == ["migration_started", "migration_succeeded"] * 2 + ["verified"]
    by_id = {r.id: r.hash for r in store.query()}
    assert all(by_id[int(r["id"])] == r["hash"] for r in rows)
    result = invoke("audit", "report", "--url", pg_url, "--from", "2000-01-01", "--domain", "other", "--format", "csv")
    assert result.stdout.count("\n") == 1  # the header only


def test_a_failed_migration_shows_as_failed_with_its_error(recorded, specs, pg_url):
    store, targets = recorded
    write(specs / "shop/postgresql/V3__broken.sql", "ALTER TABLE no_such_table ADD COLUMN x int;\n")
    with pytest.raises(PermanentError):
        run_like_airflow(specs, targets, store, "manual__2026-11-03T01:00:00+00:00")
    doc = json.loads(invoke("audit", "report", "--url", pg_url, "--from", "2000-01-01", "--format", "json").stdout)
    second = doc["runs"][-1]
    assert second["outcome"] == "failed"
    (failed,) = [m for m in second["migrations"] if m["outcome"] == "failed"]
    assert failed["script"] == "V3__broken.sql" and "no_such_table" in failed["error"]


def test_cli_verify_passes_then_names_the_tampered_row(recorded, pg_url):
    result = invoke("audit", "verify", "--url", pg_url)
    assert result.exit_code == 0 and "chain intact: 16 rows" in result.output
    with psycopg.connect(pg_url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE polymigrate_audit.events DISABLE TRIGGER USER")
        conn.execute("UPDATE polymigrate_audit.events SET body = replace(body, 'dave', 'mallory') WHERE id = 4")
        conn.execute("ALTER TABLE polymigrate_audit.events ENABLE TRIGGER USER")
    result = CliRunner().invoke(app, ["audit", "verify", "--url", pg_url])
    assert result.exit_code == 1
    assert "chain broken at row 4" in result.output and "edited after it was written" in result.output


def test_cli_reads_the_airflow_connection_variable(recorded, pg_url, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_AUDIT", pg_url)
    result = invoke("audit", "verify")
    assert result.exit_code == 0 and "chain intact" in result.output
    monkeypatch.delenv("AIRFLOW_CONN_POLYMIGRATE_AUDIT")
    result = CliRunner().invoke(app, ["audit", "verify"])
    assert result.exit_code == 2 and "AIRFLOW_CONN_POLYMIGRATE_AUDIT" in result.output


def test_csv_export_neutralises_spreadsheet_formulas():
    import csv as _csv
    import io as _io

    from polymigrate.audit.report import render_csv
    from polymigrate.audit.store import AuditRecord
    from polymigrate.events import AuditEvent

    event = AuditEvent(kind="approved", domain="shop", environment="production", actor="=HYPERLINK(\"http://x\")",
                       details={"by": "ann", "comment": "@SUM(A1)"})
    rows = list(_csv.reader(_io.StringIO(render_csv([AuditRecord(1, "h" * 64, event)]))))
    actor = rows[1][rows[0].index("actor")]
    assert actor == "'=HYPERLINK(\"http://x\")"  # shown as text, never run
