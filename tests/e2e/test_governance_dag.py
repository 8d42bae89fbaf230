"""Issue 27's acceptance as Airflow DAG runs (``dag.test()``) on real PostgreSQL with a real audit store.

Production-like: regions p1 (GDPR) and p2 (POPIA, outside PCI scope), one dba approval and, for a
regulated change, a compliance sign-off; approvals answered as Airflow's HITL API answers them.

1. a PII column without a label: the validate task fails naming the rule and the label to write;
2. labelled, its drop is a regulated change: the approve task waits for the dba and then for the
   compliance approver, says why, and records who signed off;
3. a card number copied into the Redis cache without its label: validate refuses it;
4. the PCI table planned for both regions: plan refuses, naming rule, label and region p2;
5. the compliance export lists the regulated change with who signed it off, and the refusal.

The MongoDB TTL retention (verified, dropped by hand, reported by drift) needs a real MongoDB
(FerretDB 1.24 refuses TTL indexes): tests/integration/test_governance_enforced.py runs it there and
the no-TTL failure on FerretDB.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.harness import Approver, write

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

DAG = "migrate__shop__production"


class Approvers(Approver):
    """Answers the ``approve`` task once per user, in order: each answer resumes the task, which
    re-opens the request until the policy is satisfied; keeps the text each one was shown."""

    def __init__(self, dag_id: str, users: list[str], deadline: float = 300):
        super().__init__(dag_id, users[0], "", deadline)
        self.users, self.bodies, self.assignees = users, [], []

    def run(self):
        try:
            for user in self.users:
                self.user, self.comment, self.body = user, f"reviewed by {user}", None
                self._answer()
                if self.body is None:
                    return
                self.bodies.append(self.body)
                self.assignees.append(self.assigned)  # the next _answer waits for the re-opened request
        except BaseException as exc:  # noqa: BLE001
            self.error = exc
            self._give_up()


@pytest.fixture
def world(tmp_path, make_pg_database, monkeypatch, airflow_db):
    from polymigrate.audit import PostgresAuditStore

    specs = tmp_path / "specs"
    write(specs / "environments/production.yaml", """\
        regions:
          p1: {jurisdictions: [GDPR]}
          p2: {jurisdictions: [POPIA]}
        policy:
          approvals: {required: 1, roles: [dba], triggerer_may_approve: true, compliance_roles: [compliance]}
          lint_block_at: medium
          retries: 0
          lock_wait_seconds: 5
          residency:
            - {name: pci-scope, forbid: [pci], regions: [p2], reason: PCI DSS scope covers p1 only}
        """)
    write(specs / "approvers.yaml", "users:\n  ann: [dba]\n  cora: [compliance]\n")
    write(specs / "shop/postgresql/V1__customers.sql",
          "CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, loyalty_points int);\n")
    audit = make_pg_database("pm_e2e27_audit")
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_AUDIT", audit)
    for region in ("p1", "p2"):
        monkeypatch.setenv(f"AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_{region.upper()}",
                           make_pg_database(f"pm_e2e27_{region}"))
    store = PostgresAuditStore(audit)
    store.ensure_schema()
    yield specs, store
    store.close()


def domain(specs: Path, labels: dict, technologies: dict | None = None) -> None:
    write(specs / "shop/domain.yaml", json.dumps({"technologies": technologies or {"postgresql": {"schema": "shop"}},
                                                  "labels": labels}))


def run_dag(specs: Path, users: list[str] | None = None):
    from polymigrate_airflow.renderer import build_dags

    approvers = Approvers(DAG, users) if users else None
    if approvers:
        approvers.start()
    try:
        dr = build_dags(specs)[DAG].test()
    finally:
        if approvers:
            approvers.stop.set()
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}, approvers


def test_labels_rules_compliance_sign_off_residency_and_the_export(world, capsys):
    specs, store = world

    # 1. e-mail addresses in a new table, no label: validate fails, saying what to write
    domain(specs, {})
    capsys.readouterr()
    dr, states, _ = run_dag(specs)
    assert dr.state == "failed" and states["validate"] == "failed", states
    log = capsys.readouterr().out
    assert "personal-data-unlabelled: customers.email looks like an e-mail address (pii, from its name)" in log, log[-3000:]
    assert "'postgresql:customers.email': {kind: pii, level: medium}" in log

    # 2. labelled; a later release drops it: a regulated change, signed off by compliance besides the dba
    domain(specs, {"postgresql:customers.email": {"kind": "pii", "level": "high"}})
    write(specs / "shop/postgresql/V2__drop_email.sql",
          "-- polymigrate:lint-ignore ban-drop-column reason: contact data moved to the CRM; nothing reads it\n"
          "ALTER TABLE customers DROP COLUMN email;\n")
    dr, states, approvers = run_dag(specs, ["ann", "cora"])
    assert approvers.error is None and len(approvers.bodies) == 2, (approvers.error, states)
    assert dr.state == "success", states
    first, second = approvers.bodies
    assert "**Compliance sign-off required**: 1 regulated change(s)" in first, first
    assert "drops `postgresql:customers.email` (pii/high)" in first and "cora" in approvers.assignees[0]
    sign_offs = [r.event for r in store.query(kind="approved", run_id=dr.run_id) if r.event.details.get("sign_off")]
    assert [(e.details["by"], e.details["regulated"][0]["object"]) for e in sign_offs] == [
        ("cora", "postgresql:customers.email")]
    regulated_run = dr.run_id

    # 3. card numbers: a table labelled pci, and a cache script that copies them without the label
    labels = {"postgresql:customers.email": {"kind": "pii", "level": "high"},
              "postgresql:payments.pan": {"kind": "pci", "level": "critical"}}
    domain(specs, labels, {"postgresql": {"schema": "shop"}, "redis": {"key_prefix": "shop:"}})
    write(specs / "shop/postgresql/V3__payments.sql", "CREATE TABLE payments (id bigint PRIMARY KEY, pan text NOT NULL);\n")
    write(specs / "shop/redis/1-cache-cards.lua",
          "local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3] .. 'card:*', 'COUNT', 100)\n"
          "for _, key in ipairs(res[2]) do\n  redis.call('HSET', key, 'pan', 'x')\nend\nreturn {res[1], 0}\n")
    capsys.readouterr()
    dr, states, _ = run_dag(specs)
    assert dr.state == "failed" and states["validate"] == "failed", states
    log = capsys.readouterr().out
    assert "label-not-carried: the Redis cache (card:*) field 'pan' receives postgresql:payments.pan (pci/critical)" \
        in log, log[-3000:]

    # 4. no cache after all; the pci table planned for both regions: plan refuses naming p2
    (specs / "shop/redis/1-cache-cards.lua").unlink()
    domain(specs, labels)
    capsys.readouterr()
    dr, states, approvers = run_dag(specs, ["ann", "cora"])
    assert dr.state == "failed" and states["plan"] == "failed", (states, approvers.error, approvers.bodies)
    log = capsys.readouterr().out
    assert "residency rule 'pci-scope' forbids pci data in region p2: postgresql V3__payments.sql touches " \
           "postgresql:payments.pan (PCI DSS scope covers p1 only)" in log, log[-3000:]
    assert not any(s == "success" for t, s in states.items() if t.startswith("p1.") or t.startswith("p2."))

    # 5. the compliance export: the regulated change where it ran, who approved, who signed off; the refusal
    from polymigrate.audit.report import render_json, select

    records, runs = select(store, environment="production")
    doc = json.loads(render_json(records, runs=runs))["compliance"]
    gdpr = [c for c in doc["regulations"]["GDPR"] if c["run_id"] == regulated_run]
    assert [(c["region"], c["action"], c["object"], c["approved_by"], c["signed_off_by"], c["outcome"])
            for c in gdpr] == [("p1", "drops", "postgresql:customers.email", ["ann"], ["cora"], "succeeded")]
    assert [c["region"] for c in doc["regulations"]["POPIA"] if c["run_id"] == regulated_run] == ["p2"]
    assert [(v["what"], v["rule"], v["region"], v["label"]) for v in doc["violations"]] == [
        ("residency", "pci-scope", "p2", "postgresql:payments.pan")]
