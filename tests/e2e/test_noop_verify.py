"""The two verifies of a phased region on a no-op run (issue 24, P6): the verify before contract runs
every check; the final verify, on a ledger that is still the one that verify proved (the contract
phase applied nothing), compares the ledger with the catalog again and carries the built-in and
expectation checks over instead of running them twice, saying so in its log. A run still fails when
a target drifted before it, and a ledger that changed between the two verifies is checked in full.
Whole ``dag.test()`` runs on the real PostgreSQL server."""

from __future__ import annotations

import psycopg
import pytest

from tests.e2e.harness import one_region_environment, write

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def phased(tmp_path, make_pg_database, monkeypatch, airflow_db):
    """A phased PostgreSQL release with an expectation suite, applied once by a first DAG run."""
    from polymigrate_airflow.operators import VerifyOperator
    from polymigrate_airflow.renderer import build_dags

    specs = tmp_path / "specs"
    one_region_environment(specs, "e2e", lint_block_at="critical", contract_soak_minutes=0.01)
    write(specs / "release/domain.yaml", "technologies: {postgresql: {schema: shop, phases: [expand, migrate, contract]}}\n")
    write(specs / "release/postgresql/V1__users.sql",
          "CREATE TABLE users (id bigint PRIMARY KEY, first_name text, full_name text);\n"
          "INSERT INTO users SELECT g, 'f' || g, NULL FROM generate_series(1, 20) g;\n")
    write(specs / "release/postgresql/V2__backfill.sql",
          "-- polymigrate: phase=migrate\nUPDATE users SET full_name = first_name WHERE full_name IS NULL;\n")
    write(specs / "release/postgresql/V3__drop_first_name.sql",
          "-- polymigrate: phase=contract\n"
          "-- polymigrate:lint-ignore ban-drop-column reason: contract step, every reader uses full_name\n"
          "ALTER TABLE users DROP COLUMN first_name;\n")
    write(specs / "release/expectations/users.yaml", """\
        technology: postgresql
        object: users
        expectations:
          - expect_table_row_count_to_be_between: {min_value: 1}
        """)
    url = make_pg_database("pm_noopv")
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))  # dag.test() parses the DAG file again
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_E2E_R1", url)

    class Phased:
        between = None  # called after the verify before contract, before the contract task
        results: dict = {}  # each verify task's XCom, by task id

        def run(self):
            dr = build_dags(specs)["migrate__release__e2e"].test()
            return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}

        def sql(self, statement: str) -> None:
            with psycopg.connect(url) as conn:
                conn.execute(statement)

    phased = Phased()
    original = VerifyOperator.run

    def verify_then_hook(self, context):
        result = phased.results[self.task_id] = original(self, context)
        if self.phase and phased.between is not None:
            phased.between()
        return result

    monkeypatch.setattr(VerifyOperator, "run", verify_then_hook)
    dr, states = phased.run()
    assert dr.state == "success", states
    yield phased


NOT_VALID = "ALTER TABLE shop.users ADD CONSTRAINT by_hand CHECK (id > 0) NOT VALID"


def test_a_no_op_run_runs_each_check_once(phased):
    phased.results.clear()
    dr, states = phased.run()
    assert dr.state == "success", states
    before, final = phased.results["r1.verify_before_contract"], phased.results["r1.verify"]
    assert "carried" not in before and before["checks"] == final["checks"] >= 3  # ledger, built-in, the suite
    # the final verify's XCom (and its 'verified' event) says what it took from the one before contract
    assert final["carried"] == {"from": "verify_before_contract", "verified_at": before["verified_at"],
                                "technologies": ["postgresql"]}
    assert before["target_checks"]["postgresql"][-1] == {
        "name": "expectation users: expect_table_row_count_to_be_between", "ok": True,
        "detail": before["target_checks"]["postgresql"][-1]["detail"], "technology": "postgresql"}


def test_a_no_op_run_still_fails_when_the_target_drifted_before_it(phased, capsys):
    phased.sql(NOT_VALID)  # by hand, outside any migration: the ledger does not change
    dr, states = phased.run()
    assert dr.state == "failed"
    assert states["r1.verify_before_contract"] == "failed", states
    assert "by_hand" in capsys.readouterr().out


def test_a_ledger_changed_between_the_two_verifies_is_checked_in_full(phased, capsys):
    def changed():  # the ledger changes (a row's description) and a NOT VALID constraint appears
        phased.sql("UPDATE polymigrate.schema_history SET description = description || ' (edited)' "
                   "WHERE installed_rank = (SELECT min(installed_rank) FROM polymigrate.schema_history)")
        phased.sql(NOT_VALID)

    phased.between = changed
    capsys.readouterr()
    dr, states = phased.run()
    assert states["r1.verify_before_contract"] == "success", states
    assert states["r1.verify"] == "failed", states
    assert "users.by_hand" in capsys.readouterr().out


def test_drift_between_the_two_verifies_on_an_unchanged_ledger_waits_for_the_next_run(phased):
    """The other side of the line: with the ledger unchanged the final verify trusts the checks run
    minutes before in this run, so a constraint added by hand in between fails the next run, as
    drift that happened after the run would."""
    phased.between = lambda: phased.sql(NOT_VALID)
    dr, states = phased.run()
    assert dr.state == "success", states
    phased.between = None
    dr, states = phased.run()
    assert states["r1.verify_before_contract"] == "failed", states
