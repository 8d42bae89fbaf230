"""A no-op execute task (issue 24, P6): where plan found nothing pending, the execute task reads the
target's ledger once and, while it is still the ledger plan read, succeeds without opening a
migration file; a ledger that changed between plan and execute takes the full path, which refuses a
file changed after plan. Whole ``dag.test()`` runs on the real PostgreSQL server."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REGION = "western_europe"
EXECUTE = f"{REGION}.postgresql"

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def noop(tmp_path, make_pg_database, monkeypatch, airflow_db):
    """The common domain in a one-region environment, applied once by a first DAG run."""
    import psycopg
    from polymigrate_airflow.operators import PlanOperator
    from polymigrate_airflow.renderer import build_dags

    specs = tmp_path / "specs"
    shutil.copytree(ROOT / "migration_specs", specs, ignore=shutil.ignore_patterns("__pycache__"))
    for p in specs.iterdir():
        if p.is_dir() and p.name not in ("environments", "common"):
            shutil.rmtree(p)
    (specs / "environments" / "noop.yaml").write_text(textwrap.dedent(f"""\
        policy:
          approvals: {{required: 0}}
          lint_block_at: critical
          retries: 0
        regions:
          {REGION}: {{technologies: [postgresql]}}
        """))
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))  # dag.test() parses the DAG file again
    url = make_pg_database("pm_noop")
    monkeypatch.setenv(f"AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_NOOP_{REGION.upper()}", url)
    files = sorted(p for p in (specs / "common" / "postgresql").rglob("*") if p.is_file())
    assert files

    class Noop:
        after_plan = None  # called once plan has pushed its XCom, before any execute task

        def run(self):
            dag = build_dags(specs)["migrate__common__noop"]
            dr = dag.test()
            return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}

        def ledger(self):
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT installed_rank, script, checksum, status FROM polymigrate.schema_history "
                                    "ORDER BY installed_rank").fetchall()

        def touch_ledger(self):
            """Someone changes the ledger between plan and execute (a row's description, nothing pending)."""
            with psycopg.connect(url) as conn:
                conn.execute("UPDATE polymigrate.schema_history SET description = description || ' (edited)' "
                             "WHERE installed_rank = (SELECT min(installed_rank) FROM polymigrate.schema_history)")

    noop = Noop()
    original = PlanOperator.run

    def plan_then_hook(self, context):
        result = original(self, context)
        if noop.after_plan is not None:
            noop.after_plan()
        return result

    monkeypatch.setattr(PlanOperator, "run", plan_then_hook)
    dr, states = noop.run()
    assert dr.state == "success", states
    assert len(noop.ledger()) == len(files)  # every file applied once: from now on nothing is pending
    noop.files = files
    noop.applied_long_ago = next(f for f in files if f.name.startswith("V1__"))  # a versioned file: edits refused
    yield noop


def edit(f: Path) -> None:
    f.write_text(f.read_text() + "\n-- edited after plan\n")


def test_a_no_op_execute_does_not_read_migration_files(noop, tmp_path):
    before = noop.ledger()

    def unreadable():  # every migration file a dangling link: opening any of them fails, even as root
        for f in noop.files:
            f.unlink()
            f.symlink_to(tmp_path / "gone" / f.name)

    noop.after_plan = unreadable
    dr, states = noop.run()
    assert states["plan"] == "success"
    assert states[EXECUTE] == "success", states
    assert noop.ledger() == before


def test_a_ledger_changed_between_plan_and_execute_takes_the_full_path(noop):
    def changed():  # the ledger changes and a file applied long ago is edited: the full path refuses it
        noop.touch_ledger()
        edit(noop.applied_long_ago)

    noop.after_plan = changed
    dr, states = noop.run()
    assert states["plan"] == "success"
    assert states[EXECUTE] == "failed", states
    assert dr.state == "failed"


def test_a_ledger_changed_between_plan_and_execute_alone_still_succeeds(noop):
    """The failure above is the edited file's refusal, not the edited ledger row's."""
    noop.after_plan = noop.touch_ledger
    dr, states = noop.run()
    assert states[EXECUTE] == "success", states


def test_an_unchanged_ledger_with_an_edited_file_is_still_a_no_op(noop):
    """The other half of the same line: only the ledger decides, so the edit above was refused because
    the ledger changed, not because the no-op shortcut looked at the file."""
    noop.after_plan = lambda: edit(noop.applied_long_ago)
    dr, states = noop.run()
    assert states[EXECUTE] == "success", states
