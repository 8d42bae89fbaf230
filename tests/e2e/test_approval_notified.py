"""Issue 23.1: an approval request reaches the approvers' route, with its summary and a link.

A real ``airflow standalone`` (the approve task defers to the triggerer; ``dag.test()`` would block
on it) whose tasks send e-mail through ``SmtpNotifier`` to a local SMTP server (aiosmtpd, in this
test's process). Production routes ``approval_requested`` to a release-manager list; the domain's
owners take only failures, so they are not asked.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.e2e.harness import People, Standalone, body_of

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

DAG = "migrate__shop__production"
USERS = {"olga": "olga-pass-1", "ann": "ann-pass-22"}


def write_specs(root: Path) -> None:
    files = {
        "environments/production.yaml": """\
            regions: {r1: null}
            policy:
              approvals: {required: 1, roles: [dba], triggerer_may_approve: false}
              retries: 0
            notify:
              email: [release-managers@example.com]
              events: [approval_requested]
            """,
        "approvers.yaml": "users:\n  olga: [dba]\n  ann: [dba]\n",
        "shop/domain.yaml": """\
            owners: [shop@example.com]
            notify: {events: [run_failed]}
            technologies: {postgresql: {}}
            """,
        "shop/postgresql/V1__customers.sql": "CREATE TABLE customers (id bigint PRIMARY KEY);\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text), encoding="utf-8")


def test_an_approval_request_reaches_the_approvers_route_once(tmp_path, make_pg_database, smtp_server):
    smtp_port, received = smtp_server
    specs = tmp_path / "specs"
    write_specs(specs)
    with Standalone(tmp_path, metadata=make_pg_database("pm_e2e23_appr_airflow"), users=USERS,
                    extra={"POLYMIGRATE_SPECS": str(specs),
                           "AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_R1": make_pg_database("pm_e2e23_r1"),
                           "AIRFLOW_CONN_POLYMIGRATE_AUDIT": make_pg_database("pm_e2e23_appr_audit"),
                           "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({
                               "conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
                               "extra": {"disable_ssl": True, "disable_tls": True,
                                         "from_email": "polymigrate@example.com"}})}) as airflow:
        api = People(airflow.base, USERS, airflow.log, proc=airflow.proc)
        api.reader = "olga"
        api.unpause(DAG)
        r = api.call("olga", "POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {}})
        assert r.status_code in (200, 201), r.text
        run_id = r.json()["dag_run_id"]
        api.wait("the approval request's e-mail", lambda: received, 240)
        base = airflow.base

    (rcpts, mail), = received  # once: the owners take only failures here
    assert rcpts == ["release-managers@example.com"]
    assert mail["Subject"] == "[polymigrate] shop production: approval requested"
    text = body_of(mail)
    assert f"Run {run_id} waits for approval." in text
    # the approval summary: who may answer, what is pending where, the hash approved
    assert "needs **1** approval(s)" in text and "Only ann may answer" in text and "| r1 | 1 |" in text, text
    assert "change-set hash:" in text
    assert f"Link: {base}/dags/{DAG}/runs/" in text and "/tasks/approve" in text, text
