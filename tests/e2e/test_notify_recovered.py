"""Issue 23.1: a failure told to on-call, then a later try of the same run that succeeds (a clear after
the fix), tells "recovered" once: not for a retry whose failure nobody was told, not again on a
third try of the same run.

The operator's own failure and success paths (``polymigrate_airflow.observability``) on real runs of the
command layer with a real audit store (where the told failure is recorded as ``notified``) and a real
SMTP server on loopback reached through ``SmtpNotifier``. ``dag.test()`` cannot clear a task of a
finished run, so each try is the operator's hook with the try number Airflow would give it.
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import audit_store, body_of, shop_specs, smtp_connection

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def test_a_told_failure_then_a_successful_try_tells_recovered_once_per_run(tmp_path, make_pg_database, monkeypatch,
                                                                             airflow_db, smtp_server):
    from polymigrate.commands import RunParams, Who
    from polymigrate.commands.context import EnvironmentConnector, open_run
    from polymigrate.errors import PermanentError, TransientError
    from polymigrate.executor import RunResult
    from polymigrate_airflow import observability
    from polymigrate_airflow.connections import audit_conninfo
    from polymigrate_airflow.operators import PostgresMigrationOperator

    smtp_port, mails = smtp_server
    specs = shop_specs(tmp_path / "specs", {"production": """\
        regions: {p1: null}
        policy: {approvals: {required: 0}, retries: 1, lock_wait_seconds: 5}
        notify: {email: [oncall@example.com], events: [run_failed, recovered]}
        """}, {"V1__orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY);\n"})
    store = audit_store(monkeypatch, make_pg_database("pm_e2e23_recovered"))
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(smtp_port, retry_limit=1, timeout=10))

    def attempt(run_id: str, try_number: int, outcome: BaseException | None):
        """One try of the execute task p1.postgresql: its failure path or its success path."""
        op = PostgresMigrationOperator(task_id="p1.postgresql", specs_root=str(specs), domain="shop",
                                       environment="production", region="p1", technology="postgresql", retries=1)
        who = Who("dag_test@airflow", "dag_test", run_id, run_type="manual", dag_id="migrate__shop__production",
                  task_id="p1.postgresql", try_number=try_number)
        op._run = open_run(specs, "shop", "production", params=RunParams(), who=who,
                           connector=EnvironmentConnector(), audit=audit_conninfo)
        try:
            if outcome is None:
                observability.migrated(op, RunResult("p1", "postgresql", applied=[]))
            else:
                ti = type("TI", (), {"try_number": try_number, "max_tries": 1, "log_url": None})()
                observability.failure(op, {"ti": ti, "run_id": run_id}, outcome,
                                      retryable=isinstance(outcome, TransientError), who=who)
        finally:
            op._run.close()

    def subjects() -> list[str]:
        return [m["Subject"] for _, m in mails]

    # run A: a transient failure Airflow retries (nobody told), then the retry succeeds: nothing to recover
    attempt("manual__a", 1, TransientError("the server did not answer"))
    attempt("manual__a", 2, None)
    assert subjects() == []

    # run B: the file fails for good (told), the on-call fixes it and clears the task: recovered, once
    attempt("manual__b", 1, PermanentError("V1__orders.sql: relation \"orderz\" does not exist"))
    assert subjects() == ["[polymigrate] shop production/p1/postgresql: migration failed"]
    attempt("manual__b", 2, None)
    attempt("manual__b", 3, None)  # cleared once more: the run already told its recovery
    assert subjects() == ["[polymigrate] shop production/p1/postgresql: migration failed",
                          "[polymigrate] shop production/p1/postgresql: recovered"]
    (rcpts, mail), = mails[1:]
    assert rcpts == ["oncall@example.com"]
    assert "succeeded on try 2 (it failed on try 1 and run_failed was sent)" in body_of(mail)
    assert "Run: manual__b" in body_of(mail)
    told = [(r.event.run_id, r.event.details["event"]) for r in store.query(kind="notified")]
    assert told == [("manual__b", "run_failed"), ("manual__b", "recovered")]
    store.close()
