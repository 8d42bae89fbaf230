"""Issue 23.1: an approval request reaches the approvers' route, with its summary and a link.

A real ``airflow standalone`` (the approve task defers to the triggerer; ``dag.test()`` would block
on it) whose tasks send e-mail through ``SmtpNotifier`` to a local SMTP server (aiosmtpd, in this
test's process). Production routes ``approval_requested`` to a release-manager list; the domain's
owners take only failures, so they are not asked.
"""

from __future__ import annotations

import html
import json
import textwrap
from email import message_from_bytes
from pathlib import Path

import pytest

from scripts import airflow_local as local

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DAG = "migrate__shop__production"
USERS = {"olga": "olga-pass-1", "ann": "ann-pass-22"}


@pytest.fixture
def mails():
    from aiosmtpd.controller import Controller

    received: list = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            received.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=local.free_port())
    controller.start()
    yield controller.port, received
    controller.stop()


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


def test_an_approval_request_reaches_the_approvers_route_once(tmp_path, make_pg_database, mails):
    import httpx

    smtp_port, received = mails
    specs = tmp_path / "specs"
    write_specs(specs)
    env = local.airflow_env(tmp_path / "airflow", local.free_port(), dags_folder=ROOT / "dags",
                            metadata_url=make_pg_database("pm_e2e23_appr_airflow").replace(
                                "postgresql://", "postgresql+psycopg2://"), users=USERS,
                            extra={"POLYMIGRATE_SPECS": str(specs),
                                   "AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_R1": make_pg_database("pm_e2e23_r1"),
                                   "AIRFLOW_CONN_POLYMIGRATE_AUDIT": make_pg_database("pm_e2e23_appr_audit"),
                                   "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({
                                       "conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
                                       "extra": {"disable_ssl": True, "disable_tls": True,
                                                 "from_email": "polymigrate@example.com"}})})
    base = env["AIRFLOW__API__BASE_URL"]
    log = tmp_path / "standalone.log"
    proc = local.start([local.AIRFLOW, "standalone"], env, log)
    try:
        local.wait_healthy(base, 300, proc=proc, log=log)
        token = httpx.post(f"{base}/auth/token", json={"username": "olga", "password": USERS["olga"]},
                           timeout=30).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        local.wait_until(f"DAG {DAG}", lambda: httpx.get(f"{base}/api/v2/dags/{DAG}", headers=headers,
                                                         timeout=30).status_code == 200, 300, proc=proc, log=log,
                         ignore=(httpx.HTTPError,))
        httpx.patch(f"{base}/api/v2/dags/{DAG}", json={"is_paused": False}, headers=headers, timeout=30)
        r = httpx.post(f"{base}/api/v2/dags/{DAG}/dagRuns", json={"logical_date": None, "conf": {}},
                       headers=headers, timeout=30)
        assert r.status_code in (200, 201), r.text
        run_id = r.json()["dag_run_id"]
        local.wait_until("the approval request's e-mail", lambda: received, 240, proc=proc, log=log)
    finally:
        local.stop(proc)

    (rcpts, mail), = received  # once: the owners take only failures here
    assert rcpts == ["release-managers@example.com"]
    assert mail["Subject"] == "[polymigrate] shop production: approval requested"
    parts = [mail] if not mail.is_multipart() else [p for p in mail.walk() if not p.is_multipart()]
    text = html.unescape("".join(p.get_payload(decode=True).decode() for p in parts))
    assert f"Run {run_id} waits for approval." in text
    # the approval summary: who may answer, what is pending where, the hash approved
    assert "needs **1** approval(s)" in text and "Only ann may answer" in text and "| r1 | 1 |" in text, text
    assert "change-set hash:" in text
    assert f"Link: {base}/dags/{DAG}/runs/" in text and "/tasks/approve" in text, text
