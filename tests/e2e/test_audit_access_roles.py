"""Who reads which audit history, against a real ``airflow api-server`` on the FAB auth manager
(issue 27, item 6): users whose FAB roles read different DAGs see different histories, matrices
and exports; a run of a DAG the user may not read is 403 with the reason; the compliance role
(read on all DAGs) reads everything.

The simple auth manager cannot express this (its roles apply to every DAG), hence FAB here; the
users and roles are made by scripts/fab_access.py, as docs/audit.md tells a deployment to.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from polymigrate.audit import PostgresAuditStore
from polymigrate.blueprint import dag_id
from scripts import airflow_local as local
from tests.audit_seed import seed_sample_history
from tests.e2e.harness import ApiServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow, pytest.mark.engine("postgresql")]

ROOT = Path(__file__).resolve().parents[2]
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
PASSWORD = "access-e2e-password"


@pytest.fixture(scope="module")
def fab_airflow(module_databases, tmp_path_factory):
    """One API server for the module: both tests only read what it serves (issue 25.4)."""
    pg_url = module_databases.make("pm_fab_audit")
    store = PostgresAuditStore(pg_url)
    store.ensure_schema()
    expected = seed_sample_history(store)
    prod = expected["failed"][0]
    other = next(d for d in expected["domains"] if d != prod)
    facts = {"prod": prod, "other": other, "scopes": store.scopes(),
             "prod_run": next(r.event.run_id for r in store.query(domain=prod, environment="production"))}
    store.close()

    server = ApiServer(tmp_path_factory.mktemp("fab"), extra={"AIRFLOW__CORE__AUTH_MANAGER": FAB, "AIRFLOW_CONN_POLYMIGRATE_AUDIT": pg_url})
    staging_of_other, prod_of_prod, staging_of_prod = dag_id(other, "staging"), dag_id(prod, "production"), dag_id(prod, "staging")
    spec = {"dags": [staging_of_other, prod_of_prod, staging_of_prod],
            "roles": {"OtherStaging": [["can_read", f"DAG:{staging_of_other}"]],
                      "ProdTeam": [["can_read", f"DAG:{prod_of_prod}"], ["can_read", f"DAG:{staging_of_prod}"]],
                      "Compliance": [["can_read", "DAGs"]]},
            "users": {"ward": {"role": "OtherStaging", "password": PASSWORD},
                      "sofia": {"role": "ProdTeam", "password": PASSWORD},
                      "cora": {"role": "Compliance", "password": PASSWORD}}}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "fab_access.py")], input=json.dumps(spec), env=server.env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert PASSWORD not in done.stdout + done.stderr

    with server:
        yield server.base, facts


def session(base: str, user: str) -> httpx.Client:
    """The audit pages as ``user`` reads them, signed in through Airflow's API (``airflow_local.Client``)."""
    return httpx.Client(base_url=f"{base}/polymigrate", timeout=60,
                        headers={"Authorization": f"Bearer {local.Client(base).fetch_token(user, PASSWORD)}"})


def pairs(rows) -> set[tuple[str, str]]:
    return {(r["domain"], r["environment"]) for r in rows}


def test_users_with_different_dag_access_see_different_histories_and_exports(fab_airflow):
    base, facts = fab_airflow
    prod, other = facts["prod"], facts["other"]
    assert httpx.get(f"{base}/polymigrate/api/history").status_code == 401

    ward, sofia, cora = session(base, "ward"), session(base, "sofia"), session(base, "cora")
    histories = {name: pairs(c.get("/api/history").json()["events"]) for name, c in
                 (("ward", ward), ("sofia", sofia), ("cora", cora))}
    assert histories["ward"] == {(other, "staging")}
    assert histories["sofia"] == {(prod, "production"), (prod, "staging")}
    assert histories["cora"] == facts["scopes"]  # the compliance role reads everything

    assert pairs(ward.get("/api/matrix").json()["rows"]) == {(other, "staging")}
    assert (prod, "production") in pairs(sofia.get("/api/matrix").json()["rows"])

    for name, client in (("ward", ward), ("sofia", sofia)):
        exported = client.get("/export", params={"format": "csv"})
        assert exported.status_code == 200
        assert pairs(csv.DictReader(io.StringIO(exported.text))) == histories[name]
    assert "lock timeout on table orders" not in ward.get("/").text
    assert "lock timeout on table orders" in sofia.get("/").text
    assert "lock timeout on table orders" not in ward.get("/export", params={"format": "html"}).text


def test_a_run_of_a_dag_the_user_may_not_read_is_403_with_the_reason(fab_airflow):
    base, facts = fab_airflow
    run, dag = facts["prod_run"], dag_id(facts["prod"], "production")
    ward, sofia, cora = session(base, "ward"), session(base, "sofia"), session(base, "cora")

    denied = ward.get(f"/api/runs/{run}", params={"dag_id": dag})
    assert denied.status_code == 403
    reason = denied.json()["reason"]
    assert dag in reason and "'ward'" in reason and "FabAuthManager" in reason and "compliance role" in reason
    page = ward.get(f"/runs/{run}", params={"dag_id": dag})
    assert page.status_code == 403 and dag in page.text and "Access denied" in page.text

    for client in (sofia, cora):
        shown = client.get(f"/api/runs/{run}", params={"dag_id": dag})
        assert shown.status_code == 200
        assert pairs(shown.json()["runs"]) == {(facts["prod"], "production")}
        assert "lock timeout on table orders" in client.get(f"/runs/{run}", params={"dag_id": dag}).text
