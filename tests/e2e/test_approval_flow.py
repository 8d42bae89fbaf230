"""Four-eyes approval end to end: a real ``airflow standalone`` (API server, scheduler, triggerer,
dag processor) on a PostgreSQL metadata database, people answering through the HITL REST API.

The spec tree is a small production environment: two approvals from ``dba``/``release_manager``,
the triggering user may not approve. Region ``r1`` is a fresh database; region ``r2`` already holds
a table the first migration creates, so its execute task fails. The on-call later drops that table
and clears the task, after someone edited a migration: execution must refuse instead of applying
a file nobody approved.
Every decision lands in the audit store (the ``polymigrate_audit`` connection).

The last test walks the same request in Airflow's own UI, as the second approver would (headless
Chromium over the DevTools protocol): bob logs in through the simple auth manager's login form,
opens the approve task's Required Actions tab, reads polymigrate's summary there (domain,
environment, who triggered, approvals needed and from whom, lint risk, the staging estimate with
each file's name, the change-set hash), types a comment and presses Approve. The answer counts (the
run goes on to apply both regions) and is on record under bob's name with his comment. Screenshots:
tests/artifacts/approver-request.png and approver-answered.png.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from tests.e2e.harness import ARTIFACTS, DagPeople, Standalone, audit_events, ledger

# PostgreSQL: the module's databases outlive a test (one Airflow serves them all), so the fixture
# that counts a test for PostgreSQL (make_pg_database) is not among its fixtures.
pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow, pytest.mark.engine("postgresql")]

DAG = "migrate__shop__production"
USERS = {"olga": "olga-pass-1", "ann": "ann-pass-22", "bob": "bob-pass-333", "dev1": "dev1-pass-4444"}
V2 = "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers (id));\n"


def write_specs(root: Path) -> None:
    (root / "environments").mkdir(parents=True, exist_ok=True)
    (root / "environments" / "production.yaml").write_text(textwrap.dedent("""\
        description: Live traffic (test copy).
        regions:
          r1: {display_name: Region one}
          r2: {display_name: Region two}
        policy:
          approvals:
            required: 2
            roles: [dba, release_manager]
            triggerer_may_approve: false
            expiry_hours: 24
          rollout: {strategy: sequential, halt_on_failure: true}
          lint_block_at: critical
          retries: 0
          lock_wait_seconds: 5
        """))
    (root / "approvers.yaml").write_text("users:\n  olga: [dba]\n  ann: [dba]\n  bob: [release_manager]\n  dev1: [developer]\n")
    pg = root / "shop" / "postgresql"
    pg.mkdir(parents=True, exist_ok=True)
    (root / "shop" / "domain.yaml").write_text("description: A tiny shop.\nowners: [shop@example.com]\n"
                                               "technologies:\n  postgresql: {}\n")
    (pg / "V1__customers.sql").write_text("CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);\n")
    (pg / "V2__orders.sql").write_text(V2)


@pytest.fixture(scope="module")
def shop(tmp_path_factory, module_databases):
    """One standalone for the module (its start-up is most of a test's time); each test gets fresh
    targets and the original files from ``airflow`` below."""
    tmp = tmp_path_factory.mktemp("approval")
    specs = tmp / "specs"
    write_specs(specs)
    r1, r2, audit, staging = (module_databases.make(f"pm_appr_{k}") for k in ("r1", "r2", "audit", "s1"))
    with Standalone(tmp, metadata=module_databases.make("pm_appr_airflow"), users=USERS,
                    extra={"POLYMIGRATE_SPECS": str(specs),
                           "AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_R1": r1,
                           "AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_R2": r2,
                           "AIRFLOW_CONN_POLYMIGRATE_AUDIT": audit,
                           # only the UI test's specs have a staging environment (rehearsal estimates)
                           "AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_STAGING_S1": staging}) as airflow:
        api = DagPeople(airflow, DAG, reader="olga")
        api.default_timeout, api.settle_timeout = 180, 120
        api.specs, api.r1, api.r2, api.audit, api.staging = specs, r1, r2, audit, staging
        api.unpause(DAG)
        yield api


@pytest.fixture
def airflow(shop, module_databases):
    """The shared standalone, its earlier runs ended, the files as written, r1 fresh and r2 fresh
    but for a table the first migration creates (its execute task fails until the on-call drops it)."""
    shop.wait("the earlier test's run to end", shop.runs_ended, 300)
    write_specs(shop.specs)
    for url in (shop.r1, shop.r2):
        module_databases.recreate(url)
    with psycopg.connect(shop.r2, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (legacy text)")
    return shop


def test_four_eyes_two_distinct_approvers_then_an_edited_file_is_refused(airflow):
    api = airflow
    run = api.trigger("olga")
    api.wait_for_request(run, "the approval request")
    assert ledger(api.r1) == []  # nothing runs while waiting

    detail = api.hitl(run)
    assert sorted(u["name"] for u in detail["assigned_users"]) == ["ann", "bob"]  # not olga (triggered), not dev1
    assert "triggered by **olga**" in detail["body"] and "needs **2** approval(s)" in detail["body"]
    validate = api.xcom(run, "validate")
    assert validate["changeset_hash"] in detail["body"]

    # Four-eyes: the triggering user cannot answer; nor can someone without an approving role.
    for outsider in ("olga", "dev1"):
        r = api.answer(outsider, run, "Approve")
        assert r.status_code == 403, (outsider, r.status_code, r.text)

    # One approval is not enough; the same person approving again does not count twice.
    assert api.answer("ann", run, "Approve", "schema reviewed").status_code == 200
    api.wait_for_request(run, "the request to reopen after ann")
    assert api.answer("ann", run, "Approve").status_code == 200
    api.wait_for_request(run, "the request to reopen after ann's second answer")
    assert ledger(api.r1) == []

    assert api.answer("bob", run, "Approve").status_code == 200
    api.wait("the run to finish", lambda: api.run_state(run), 300)
    approved = api.xcom(run, "approve")
    assert approved["approved_by"] == ["ann", "bob"] and approved["changeset_hash"] == validate["changeset_hash"]
    assert api.ti(run, "r1.postgresql")["state"] == "success"
    assert [v for v, _, s in ledger(api.r1) if s == "success"] == ["1", "2"]
    assert api.ti(run, "r2.postgresql")["state"] == "failed"  # customers already exists there

    events = audit_events(api.audit, run)
    approvals = [(e.details.get("by"), e.details.get("counted")) for e in events if e.kind == "approved"]
    assert approvals == [("ann", True), ("ann", False), ("bob", True)]
    assert all(e.details["changeset_hash"] == validate["changeset_hash"]
               for e in events if e.kind in ("approved", "approval_requested"))

    # Someone edits an approved migration; the on-call then fixes r2 and clears its task.
    (api.specs / "shop" / "postgresql" / "V2__orders.sql").write_text(V2 + "DROP TABLE customers CASCADE;\n")
    with psycopg.connect(api.r2, autocommit=True) as conn:
        conn.execute("DROP TABLE customers")
    r = api.call("olga", "POST", f"/api/v2/dags/{DAG}/clearTaskInstances",
                 {"dry_run": False, "dag_run_id": run, "task_ids": ["r2.postgresql"], "only_failed": True,
                  "reset_dag_runs": True})
    assert r.status_code == 200, r.text
    api.wait("r2 to run again", lambda: api.ti(run, "r2.postgresql").get("try_number", 0) >= 2
             and api.ti(run, "r2.postgresql").get("state") in ("failed", "success"), 300)
    assert api.ti(run, "r2.postgresql")["state"] == "failed"
    assert [row for row in ledger(api.r2) if row[2] == "success"] == []  # nothing ran there, edited file included
    after_clear = audit_events(api.audit, run)
    assert [e.kind for e in after_clear][0] == "triggered" and after_clear[0].details["by"] == "olga"
    retried = [e for e in after_clear if e.kind == "task_retried"]
    assert [(e.task_id, e.try_number) for e in retried] == [("r2.postgresql", 2)]  # the clear is on record
    refused = [e for e in after_clear if e.kind == "refused"]
    assert refused and refused[-1].details["reason"] == "the change set changed after approval"
    assert refused[-1].details["changeset_hash"] == validate["changeset_hash"] != refused[-1].details["current_hash"]


def test_a_rejection_ends_the_run_with_the_reason_recorded(airflow):
    api = airflow
    run = api.trigger("olga")
    api.wait_for_request(run, "the approval request")
    assert api.answer("bob", run, "Reject", "not during the sale").status_code == 200
    assert api.wait("the run to finish", lambda: api.run_state(run), 300) == "failed"
    assert api.ti(run, "approve")["state"] == "failed"
    assert api.ti(run, "plan")["state"] == "upstream_failed"
    assert api.ti(run, "r2.postgresql")["state"] == "upstream_failed"
    assert ledger(api.r1) == [] and ledger(api.r2) == []
    rejected = [e for e in audit_events(api.audit, run) if e.kind == "rejected"]
    assert [(e.details["by"], e.details["reason"]) for e in rejected] == [("bob", "not during the sale")]


def test_approvals_given_survive_a_cleared_approve_task(airflow):
    api = airflow
    run = api.trigger("olga")
    api.wait_for_request(run, "the approval request")
    assert api.answer("ann", run, "Approve").status_code == 200
    api.wait_for_request(run, "the request to reopen after ann's answer")

    # The approve task fails while parked (what Airflow's early-answer race does); the on-call clears it.
    r = api.call("olga", "PATCH", f"/api/v2/dags/{DAG}/dagRuns/{run}/taskInstances/approve", {"new_state": "failed"})
    assert r.status_code == 200, r.text
    # What the on-call sees before clearing: the failure settled, plan and the regions upstream_failed.
    # Clearing within the scheduler's pass that sets them lost that update (Airflow 3.3.2): the clear
    # read plan as "none", the scheduler committed "upstream_failed", and the clear then wrote only
    # the columns it changed (a new try id), leaving plan upstream_failed under a cleared approve.
    api.wait("the failed approval to settle", lambda: api.run_state(run) == "failed"
             and api.ti(run, "plan").get("state") == "upstream_failed", 120)
    r = api.call("olga", "POST", f"/api/v2/dags/{DAG}/clearTaskInstances",
                 {"dry_run": False, "dag_run_id": run, "task_ids": ["approve"], "include_downstream": True,
                  "only_failed": False, "reset_dag_runs": True})
    assert r.status_code == 200, r.text
    api.wait("the approve task's second try", lambda: api.ti(run, "approve").get("try_number", 0) >= 2, 120)
    api.wait_for_request(run, "the request on the new try")

    assert api.answer("bob", run, "Approve").status_code == 200  # ann is not asked again
    api.wait("the run to finish", lambda: api.run_state(run), 300)
    approved = api.xcom(run, "approve")
    assert approved["approved_by"] == ["ann", "bob"]
    assert api.ti(run, "r1.postgresql")["state"] == "success"


def test_a_forged_approval_does_not_let_the_run_through(airflow):
    api = airflow
    run = api.trigger("olga")
    api.wait_for_request(run, "the approval request")
    validate = api.xcom(run, "validate")
    # Someone allowed to edit task state and XComs fakes the approve task's result instead of asking.
    base = f"/api/v2/dags/{DAG}/dagRuns/{run}/taskInstances/approve"
    r = api.call("olga", "POST", f"{base}/xcomEntries",
                 {"key": "return_value", "value": {"approved": True, "changeset_hash": validate["changeset_hash"],
                                                   "approved_by": ["ann", "bob"], "override": False}})
    assert r.status_code in (200, 201), r.text
    r = api.call("olga", "PATCH", base, {"new_state": "success"})
    assert r.status_code == 200, r.text
    api.wait("the plan task to end", lambda: api.ti(run, "plan").get("state") in ("failed", "success"), 300)
    assert api.ti(run, "plan")["state"] == "failed"
    assert ledger(api.r1) == [] and ledger(api.r2) == []
    refused = [e for e in audit_events(api.audit, run) if e.kind == "refused"]
    assert refused and refused[-1].details["reason"] == "no valid approval on record"


STAGING = """\
    regions: {s1: null}
    policy: {approvals: {required: 0}, retries: 0, lock_wait_seconds: 5}
    """


@pytest.mark.engine("chromium")
def test_the_second_approver_reads_the_summary_and_approves_in_airflows_ui(airflow, module_databases, browser):
    api = airflow
    # Production estimates from staging: staging has applied both files (its ledger holds their durations).
    staging_yaml = api.specs / "environments" / "staging.yaml"
    staging_yaml.write_text(textwrap.dedent(STAGING))
    production = api.specs / "environments" / "production.yaml"
    production.write_text(production.read_text().replace("policy:\n", "policy:\n  rehearsal_from: staging\n", 1))
    module_databases.recreate(api.staging)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_STAGING_S1"] = api.staging
    done = subprocess.run([str(Path(sys.executable).with_name("polymigrate")), "migrate", "-e", "staging", "-d", "shop",
                           "-s", str(api.specs)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(api.r2, autocommit=True) as conn:
        conn.execute("DROP TABLE customers")  # this run is meant to go through in both regions

    try:
        run = api.trigger("olga")
        api.wait_for_request(run, "the approval request")
        validate = api.xcom(run, "validate")
        assert api.answer("ann", run, "Approve", "schema reviewed").status_code == 200
        api.wait_for_request(run, "the request to reopen for the second approver")

        tools, _ = browser
        tools.call("Page.enable")
        tools.call("Emulation.setDeviceMetricsOverride", width=1440, height=1400, deviceScaleFactor=1, mobile=False)
        task_path = f"/dags/{DAG}/runs/{quote(run, safe='')}/tasks/approve/required_actions"
        # bob signs in through the simple auth manager's form, which sends him on to the task's tab
        tools.navigate(f"{api.base}/auth/login?next={quote(task_path, safe='')}")
        tools.wait_for("the login form", "!!document.querySelector('input[name=password]')")
        tools.type_into("input[name=username]", "bob")
        tools.type_into("input[name=password]", USERS["bob"])
        tools.evaluate("document.querySelector('button[type=submit]').click()")
        summary = "shop in production, triggered by olga: needs 2 approval(s) from distinct people (ann, bob)."
        text = tools.wait_for("the approval summary under Required Actions",
                              f"document.body.innerText.includes({summary!r}) && document.body.innerText", 90)
        assert tools.evaluate("location.pathname") == task_path
        risk = validate["risk"]
        for line in (f"lint risk: {risk}",
                     "measured in staging (slowest successful run of the same files), per region:",
                     f"change-set hash: {validate['changeset_hash']}"):
            assert line in text, (line, text)
        for region in ("r1", "r2"):  # each region's estimate names every file (both were rehearsed)
            [estimate] = [ln for ln in text.splitlines() if ln.strip().startswith(f"{region}: ~")]
            assert "postgresql V1__customers.sql" in estimate and "postgresql V2__orders.sql" in estimate, estimate
        tools.wait_for("the Approve button", "[...document.querySelectorAll('button')]"
                                             ".some(b => b.innerText.trim() === 'Approve' && !b.disabled)")
        tools.screenshot(ARTIFACTS / "approver-request.png")

        # bob's comment goes in the form's Comment field (the input in the row labelled so), then Approve
        tools.wait_for("the Comment field", """(() => {
            const label = [...document.querySelectorAll('label, span, p, div')]
                .find(e => e.childElementCount === 0 && e.innerText.trim() === 'Comment');
            let row = label;
            while (row && !row.querySelector('input, textarea')) row = row.parentElement;
            const field = row && row.querySelector('input, textarea');
            if (field) field.setAttribute('data-pm-field', 'comment');
            return !!field; })()""")
        comment = "reviewed in the UI: FK on customers"
        tools.type_into("[data-pm-field=comment]", comment)
        assert tools.evaluate("document.querySelector('[data-pm-field=comment]').value") == comment
        tools.evaluate("[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Approve').click()")
        tools.wait_for("the UI to confirm bob's answer", "document.body.innerText.includes('approve response successful')")
        # counted: the run goes on and applies both regions; recorded: under bob's name, with his comment
        assert api.wait("the run to finish", lambda: api.run_state(run), 300) == "success"
        approved = api.xcom(run, "approve")
        assert approved["approved_by"] == ["ann", "bob"]
        assert [v for v, _, s in ledger(api.r1) if s == "success"] == ["1", "2"]
        assert [v for v, _, s in ledger(api.r2) if s == "success"] == ["1", "2"]
        # what bob sees on the task's tab afterwards: the task done, his answer on it
        tools.navigate(f"{api.base}{task_path}")
        answered = tools.wait_for("the answer on the Required Actions tab",
                                  "document.body.innerText.includes('Response received at') && document.body.innerText", 60)
        tools.screenshot(ARTIFACTS / "approver-answered.png")
        assert re.search(r"Response received at [\d-]+ [\d:]+ from bob\b", answered), answered
        assert tools.evaluate(f"[...document.querySelectorAll('input, textarea')].some(f => f.value === {comment!r})")
        approvals = [(e.details.get("by"), e.details.get("counted"), e.details.get("comment"))
                     for e in audit_events(api.audit, run) if e.kind == "approved"]
        assert approvals == [("ann", True, "schema reviewed"), ("bob", True, comment)], approvals
    finally:
        staging_yaml.unlink(missing_ok=True)  # the module's other tests know production only
        write_specs(api.specs)
