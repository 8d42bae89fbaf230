"""Execution windows in a whole DAG run (``dag.test()``, real PostgreSQL): the execute task defers
until the window opens, through Airflow's trigger, then applies; outside the window nothing runs."""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


LEAD = 45  # seconds validate/approve/plan may take; a clean-clone CI run with the cores busy took 22 s


def window_opening_soon(now: datetime) -> datetime:
    """The next minute boundary at least ``LEAD`` s away: long enough for validate/approve/plan to run first."""
    start = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    return start if (start - now).total_seconds() >= LEAD else start + timedelta(minutes=1)


@pytest.fixture
def specs(tmp_path, make_pg_database, monkeypatch, airflow_db):
    url = make_pg_database("pm_window")
    start = window_opening_soon(datetime.now(timezone.utc))  # after the slow part of the set-up
    end = start + timedelta(hours=1)
    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "nightly.yaml").write_text(textwrap.dedent(f"""\
        regions:
          r1: null
        policy:
          approvals: {{required: 0}}
          window: {{start: "{start:%H:%M}", end: "{end:%H:%M}", timezone: UTC}}
          lint_block_at: critical
          retries: 0
        """))
    (root / "shop" / "postgresql").mkdir(parents=True)
    (root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql: {}\n")
    (root / "shop" / "postgresql" / "V1__customers.sql").write_text("CREATE TABLE customers (id bigint PRIMARY KEY);\n")
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_NIGHTLY_R1", url)
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(root))
    return root, url, start


def test_execute_waits_for_the_window_then_applies(specs):
    from polymigrate_airflow.renderer import build_dags

    root, url, start = specs
    dag = build_dags(root)["migrate__shop__nightly"]
    dr = dag.test(run_conf={})
    finished = datetime.now(timezone.utc)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success", states
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert start <= finished
    assert tis["plan"].end_date < start, (  # planned before the window opened, or nothing waited
        f"validate→plan took longer than LEAD ({LEAD} s): the window opened before execute could wait for it")
    assert tis["r1.postgresql"].end_date >= start  # applied only once it was open

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version, status FROM polymigrate.schema_history WHERE version IS NOT NULL").fetchall()
    assert rows == [("1", "success")]
