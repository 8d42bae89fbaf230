"""Issue 23.1: a failed run tells its owners and on-call once, through Airflow's notifiers.

A ``dag.test()`` run on real PostgreSQL with a real audit store; the e-mail goes to a local SMTP
server (aiosmtpd) through ``SmtpNotifier`` and the webhook posts reach a local HTTP server through
``SlackWebhookNotifier``. Nothing leaves 127.0.0.1. In one run:

* first run: p2's server refuses connections, so ``plan`` fails with a transient error Airflow tries
  three times → one e-mail and one post, on the last try, not one per try;
* second run, p2 up: the file has a statement PostgreSQL refuses (permanent: one try) → in each
  region one e-mail and one post naming the file, the statement, the fix and the task's log;
* a second webhook's receiver is down throughout → logged, recorded as ``notification_failed`` in the
  audit store, and the tasks fail with their own errors, not the notification's.
"""

from __future__ import annotations

import json

import pytest

from scripts.airflow_local import free_port
from tests.e2e.harness import TYPO_RELEASE, audit_store, body_of, shop_specs, smtp_connection

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def world(tmp_path, make_pg_database, monkeypatch, airflow_db, smtp_server, webhook_server):
    smtp_port, mails = smtp_server
    hook_port, posts = webhook_server
    specs = shop_specs(tmp_path / "specs", {"production": """\
        regions: {p1: null, p2: null}
        policy:
          approvals: {required: 0}
          rollout: {strategy: parallel}
          retries: 2
          retry_delay_seconds: 0
          lock_wait_seconds: 5
        notify:
          email: [oncall@example.com]
          webhooks: [oncall_hook, dead_hook]
          events: [run_failed, verify_failed, production_completed]
        """}, TYPO_RELEASE, domain="""\
        owners: [shop-team@example.com]
        technologies: {postgresql: {}}
        """)
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_P1", make_pg_database("pm_e2e23_p1"))
    # nothing listens there: connection refused, a transient error Airflow retries
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_P2",
                       f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=2")
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(smtp_port, retry_limit=1, timeout=10))
    monkeypatch.setenv("AIRFLOW_CONN_ONCALL_HOOK", json.dumps(
        {"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{hook_port}/services/oncall"}))
    monkeypatch.setenv("AIRFLOW_CONN_DEAD_HOOK", json.dumps(
        {"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{free_port()}/services/dead"}))
    store = audit_store(monkeypatch, make_pg_database("pm_e2e23_audit"))
    yield specs, store, mails, posts, monkeypatch, make_pg_database
    store.close()


def test_a_failed_run_tells_owners_and_on_call_once_per_failed_task(world):
    from polymigrate_airflow.renderer import build_dags

    specs, store, mails, posts, monkeypatch, make_pg_database = world
    dr = build_dags(specs)["migrate__shop__production"].test()
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert dr.state == "failed" and tis["plan"].state == "failed"
    assert tis["plan"].try_number == 3  # three tries: the transient error was retried
    assert [m["Subject"] for _, m in mails] == ["[polymigrate] shop production: migration failed"]
    assert sorted(mails[0][0]) == ["oncall@example.com", "shop-team@example.com"]
    text = body_of(mails[0][1])
    assert "Step: plan (try 3)" in text and "Connection refused" in text and "tasks/plan?try_number=3" in text, text
    assert [p for p, _ in posts] == ["/services/oncall"] and "Step: plan (try 3)" in posts[0][1]["text"]

    mails.clear(), posts.clear()
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_P2", make_pg_database("pm_e2e23_p2"))
    dr2 = build_dags(specs)["migrate__shop__production"].test()
    tis = {ti.task_id: ti for ti in dr2.get_task_instances()}
    assert tis["p1.postgresql"].state == "failed" and tis["p2.postgresql"].state == "failed", tis
    assert sorted(m["Subject"] for _, m in mails) == ["[polymigrate] shop production/p1/postgresql: migration failed",
                                                      "[polymigrate] shop production/p2/postgresql: migration failed"]
    text = body_of(next(m for _, m in mails if "/p1/" in m["Subject"]))
    for part in ("Step: execute (try 1)", "V2__order_lines.sql", 'relation "orderz" does not exist', "statement: CREATE TABLE order_lines",
                 "fix: fix the statement, then clear the task `p1.postgresql`", "Link: http",
                 "/dags/migrate__shop__production/runs/", "/tasks/p1.postgresql?try_number=1"):
        assert part in text, (part, text)
    assert [p for p, _ in posts] == ["/services/oncall"] * 2, posts
    post = next(body["text"] for _, body in posts if "/p1/" in body["text"])
    assert "V2__order_lines.sql" in post and "statement: CREATE TABLE order_lines" in post and "fix: " in post

    # the dead receiver: recorded once per message, and the tasks failed for their own errors
    for run, regions in ((dr, [None]), (dr2, ["p1", "p2"])):
        undelivered = [e.event for e in store.query(run_id=run.run_id) if e.event.kind == "notification_failed"]
        assert sorted(e.region or "" for e in undelivered) == sorted(r or "" for r in regions)
        for e in undelivered:
            assert [u["route"] for u in e.details["undelivered"]] == ["webhook:dead_hook"]
            assert e.details["delivered"] == ["email:shop-team@example.com,oncall@example.com", "webhook:oncall_hook"]
    failed = [e.event.details["error"] for e in store.query(run_id=dr2.run_id) if e.event.kind == "task_failed"]
    assert len(failed) == 2 and all("orderz" in f for f in failed)


def test_a_release_completed_in_production_is_told_and_staging_is_not(tmp_path, make_pg_database, monkeypatch,
                                                                      airflow_db, smtp_server):
    from polymigrate_airflow.renderer import build_dags

    smtp_port, mails = smtp_server
    specs = shop_specs(tmp_path / "specs", {
        "staging": """\
            regions: {r1: null}
            policy: {approvals: {required: 0}, retries: 0}
            notify: {email: [oncall@example.com]}
            """,
        "production": """\
            regions: {r1: null}
            policy: {approvals: {required: 0}, promotion_from: staging, retries: 0}
            notify: {email: [oncall@example.com], events: [production_completed]}
            """}, {
        "V1__orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY);\n",
        "V2__lines.sql": "CREATE TABLE lines (id bigint PRIMARY KEY);\n"}, domain="""\
        owners: [shop-team@example.com]
        notify: {events: [run_failed]}
        technologies: {postgresql: {}}
        """)
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))
    audit_store(monkeypatch, make_pg_database("pm_e2e23_done_audit")).close()
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_STAGING_R1", make_pg_database("pm_e2e23_stg"))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_R1", make_pg_database("pm_e2e23_prod"))
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(smtp_port))

    dags = build_dags(specs)
    assert dags["migrate__shop__staging"].test().state == "success"
    assert mails == []  # staging: no promotion_from, nothing completed "in production"
    dr = dags["migrate__shop__production"].test()
    assert dr.state == "success"
    (rcpts, mail), = mails  # the owners take failures only
    assert rcpts == ["oncall@example.com"] and mail["Subject"] == "[polymigrate] shop production/r1: completed"
    text = body_of(mail)
    assert f"Region r1 verified (run {dr.run_id})" in text and "Now at: postgresql 2" in text and "/tasks/r1.verify" in text
