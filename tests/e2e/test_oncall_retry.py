"""The on-call's retry after a fix, on a real ``airflow standalone`` (issue 16.1).

A migration fails on a typo (a foreign key to a table name misspelt: lint cannot know, PostgreSQL
refuses). The on-call fixes the file and clears the failed task, as the docs say:

- development approves automatically: the cleared task evaluates the new files as validate would,
  records the automatic approval of the new change set with what changed, and runs them;
- production needs two people: the cleared task refuses, naming the task to clear (`approve`, with
  downstream); clearing it re-opens the request for the new files, the approvers read what changed
  since their approval (in the approve task's log: Airflow 3.3.2 keeps the first request text),
  their old approvals do not count, and two fresh approvals quoting the new hash let it through.

One Airflow serves both tests (its start is most of the cost): domain ``cart`` exists only in
development, ``shop`` only in production, each with its own target database.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.e2e.harness import DagPeople, Standalone, audit_events, ledger

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]

USERS = {"olga": "olga-pass-1", "ann": "ann-pass-22", "bob": "bob-pass-333"}
DEV, PROD = "migrate__cart__development", "migrate__shop__production"
TYPO = "CREATE TABLE {t}_items (id bigint PRIMARY KEY, {t}_id bigint REFERENCES {t} (id));\n"  # {t}s exists
FIXED = "CREATE TABLE {t}_items (id bigint PRIMARY KEY, {t}_id bigint REFERENCES {t}s (id));\n"


def write_specs(root: Path) -> None:
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "development.yaml").write_text(textwrap.dedent("""\
        regions: {d1: {}}
        policy: {approvals: {required: 0}, retries: 0, lock_wait_seconds: 5}
        """))
    (root / "environments" / "production.yaml").write_text(textwrap.dedent("""\
        regions: {p1: {}}
        policy:
          approvals: {required: 2, roles: [dba, release_manager], triggerer_may_approve: false, expiry_hours: 24}
          lint_block_at: critical
          retries: 0
          lock_wait_seconds: 5
        """))
    (root / "approvers.yaml").write_text("users:\n  olga: [dba]\n  ann: [dba]\n  bob: [release_manager]\n")
    for domain, env in (("cart", "development"), ("shop", "production")):
        pg = root / domain / "postgresql"
        pg.mkdir(parents=True)
        (root / domain / "domain.yaml").write_text(f"technologies: {{postgresql: {{}}}}\nenvironments: [{env}]\n")
        (pg / f"V1__{domain}s.sql").write_text(f"CREATE TABLE {domain}s (id bigint PRIMARY KEY);\n")
        (pg / "V2__items.sql").write_text(TYPO.format(t=domain))


@pytest.fixture(scope="module")
def airflow(tmp_path_factory, module_databases):
    tmp = tmp_path_factory.mktemp("oncall")
    specs = tmp / "specs"
    write_specs(specs)
    urls = {k: module_databases.make(f"pm_oncall_{k}") for k in ("dev", "prod", "audit")}
    with Standalone(tmp, metadata=module_databases.make("pm_oncall_airflow"), users=USERS,
                    extra={"POLYMIGRATE_SPECS": str(specs),
                           "AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_DEVELOPMENT_D1": urls["dev"],
                           "AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_PRODUCTION_P1": urls["prod"],
                           "AIRFLOW_CONN_POLYMIGRATE_AUDIT": urls["audit"]}) as standalone:
        apis = {dag: DagPeople(standalone, dag, reader="olga") for dag in (DEV, PROD)}
        for dag, api in apis.items():
            api.default_timeout, api.settle_timeout = 180, 120
            api.specs, api.audit = specs, urls["audit"]
            api.unpause(dag)
        apis[DEV].target, apis[PROD].target = urls["dev"], urls["prod"]
        yield apis


def clear(api: DagPeople, run: str, task: str) -> None:
    """What the on-call does in the grid: the task → Clear, "Downstream" selected (the dialog's default)."""
    r = api.call("olga", "POST", f"/api/v2/dags/{api.dag}/clearTaskInstances",
                 {"dry_run": False, "dag_run_id": run, "task_ids": [task], "include_downstream": True,
                  "only_failed": False, "reset_dag_runs": True})
    assert r.status_code == 200, r.text


def wait_for_try(api: DagPeople, run: str, task: str, n: int) -> str:
    """The state ``task`` ended in on try ``n``."""
    def ended():
        ti = api.ti(run, task)
        return ti.get("state") if ti.get("try_number", 0) >= n and ti.get("state") in ("failed", "success") else None
    return api.wait(f"{task} try {n} to end", ended, 300)


def task_log(api: DagPeople, run: str, task: str, n: int) -> str:
    r = api.call("olga", "GET", f"/api/v2/dags/{api.dag}/dagRuns/{run}/taskInstances/{task}/logs/{n}?full_content=true")
    assert r.status_code == 200, r.text
    return json.dumps(r.json())


def test_development_a_retry_after_a_fix_is_approved_again_automatically_and_runs(airflow):
    api = airflow[DEV]
    run = api.trigger("olga")
    assert api.wait("the run to fail on the typo", lambda: api.run_state(run), 300) == "failed"
    assert api.ti(run, "d1.postgresql")["state"] == "failed"
    assert [v for v, _, s in ledger(api.target) if s == "success"] == ["1"]
    approved_first = api.xcom(run, "approve")["changeset_hash"]

    (api.specs / "cart" / "postgresql" / "V2__items.sql").write_text(FIXED.format(t="cart"))
    clear(api, run, "d1.postgresql")
    assert wait_for_try(api, run, "d1.postgresql", 2) == "success", task_log(api, run, "d1.postgresql", 2)
    assert api.wait("the run to finish", lambda: api.run_state(run), 120) == "success"
    assert [v for v, _, s in ledger(api.target) if s == "success"] == ["1", "2"]

    again = [e for e in audit_events(api.audit, run) if e.kind == "approved"][-1]
    assert again.details["automatic"] is True and again.details["previous_hash"] == approved_first
    assert again.details["changeset_hash"] != approved_first and again.task_id == "d1.postgresql"
    assert again.details["changes"] == {"added": [], "removed": [], "changed": ["postgresql/V2__items.sql"]}
    assert "Approved automatically again" in task_log(api, run, "d1.postgresql", 2)


def test_production_a_retry_after_a_fix_names_approve_and_clearing_it_asks_again(airflow):
    api = airflow[PROD]
    run = api.trigger("olga")
    for who in ("ann", "bob"):
        api.wait_for_request(run, f"the request for {who}")
        assert api.answer(who, run, "Approve").status_code == 200
    assert api.wait("the run to fail on the typo", lambda: api.run_state(run), 300) == "failed"
    first = api.xcom(run, "approve")["changeset_hash"]
    api.parks[(api.dag, run, "approve")] += 1  # approve's success is reported like a park: the next park needs one report more

    # The on-call fixes the file and clears the failed task: refused, saying which task to clear.
    (api.specs / "shop" / "postgresql" / "V2__items.sql").write_text(FIXED.format(t="shop"))
    clear(api, run, "p1.postgresql")
    assert wait_for_try(api, run, "p1.postgresql", 2) == "failed"
    told = task_log(api, run, "p1.postgresql", 2)
    assert "clear the task `approve` with its downstream tasks" in told and "changed: postgresql/V2__items.sql" in told
    assert "trigger a new run" not in told
    assert [v for v, _, s in ledger(api.target) if s == "success"] == ["1"]
    api.wait("the run to fail again", lambda: api.run_state(run), 120)

    # Clearing `approve` (with downstream) re-opens the request for the new files. Airflow 3.3.2 keeps
    # the first request's text (apache/airflow#73235): the new summary, with what changed, is in the
    # approve task's log, and an approval counts only if it quotes the new hash.
    clear(api, run, "approve")
    api.wait_for_request(run, "the request for the fixed files")
    new = api.call("olga", "GET", f"/api/v2/dags/{PROD}/dagRuns/{run}/taskInstances/approve").json()
    summary = task_log(api, run, "approve", new["try_number"])
    assert f"**Changed since the last approval** (`{first[:12]}`" in summary
    assert "- changed: `postgresql/V2__items.sql`" in summary
    quote = [e for e in audit_events(api.audit, run) if e.kind == "approval_requested"][-1].details["quote"]
    assert f"comment quotes {quote}" in summary and "the log of the `approve` task's latest try" in api.hitl(run)["body"]
    assert api.answer("ann", run, "Approve", f"re-read {quote}").status_code == 200
    api.wait_for_request(run, "the request to stay open: the old approvals do not count")
    assert api.answer("bob", run, "Approve", f"ok {quote}").status_code == 200
    assert api.wait("the run to finish", lambda: api.run_state(run), 300) == "success"
    assert [v for v, _, s in ledger(api.target) if s == "success"] == ["1", "2"]

    events = audit_events(api.audit, run)
    second = api.xcom(run, "approve")
    assert second["changeset_hash"] != first and second["approved_by"] == ["ann", "bob"]
    asked = [e for e in events if e.kind == "approval_requested"]
    assert [e.details["changeset_hash"] for e in asked] == [first, second["changeset_hash"]]
    assert asked[-1].details["previous_hash"] == first
    counted = [(e.details["by"], e.details["changeset_hash"]) for e in events if e.kind == "approved"]
    assert counted == [("ann", first), ("bob", first), ("ann", second["changeset_hash"]),
                       ("bob", second["changeset_hash"])]
