"""Whole DAG runs (``dag.test()``) against the real PostgreSQL and Redis servers.

A copy of the sample specs gains an ``e2e`` environment with three regions under sequential
rollout; each region is its own fresh PostgreSQL database and its own Redis DB number, reached
through ``AIRFLOW_CONN_*`` variables, as an operator would configure Airflow.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "migration_specs"
REGIONS = {"western_europe": 1, "eastern_europe": 2, "north_africa": 3}  # region -> Redis DB number
CURRENCY = {"western_europe": "EUR", "eastern_europe": "EURO", "north_africa": "MAD"}  # EURO: a region's typo
RUN_TECHS = ["postgresql", "redis"]  # MongoDB and Elasticsearch tasks are skipped by param (tests/e2e/test_phased_release_four_engines.py runs them)

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def env_yaml(currency: dict[str, str], lint_block_at: str = "critical") -> str:
    regions = "\n".join(f"  {r}: {{placeholders: {{currency: {c}}}}}" for r, c in currency.items())
    return textwrap.dedent(f"""\
        description: End-to-end tests, one fresh database per region.
        policy:
          approvals: {{required: 0}}
          rollout: {{strategy: sequential, halt_on_failure: true}}
          lint_block_at: {lint_block_at}
          retries: 0
          lock_wait_seconds: 5
        regions:
        """) + regions + "\n"


@pytest.fixture
def e2e(tmp_path, make_pg_database, monkeypatch, airflow_db):
    """A spec copy with an e2e environment, its connections, and helpers to run and inspect DAGs."""
    import redis
    from tests.conftest import REDIS_URL

    specs = tmp_path / "specs"
    shutil.copytree(SPECS, specs)
    for extra in ("warehousing", "courier-services", "centralized-dashboard"):
        shutil.rmtree(specs / extra, ignore_errors=True)  # fewer DAGs to parse per dag.test()
    (specs / "environments" / "e2e.yaml").write_text(env_yaml(CURRENCY))
    (specs / "social-commerce" / "postgresql" / "tables" / "V9__regional_settings.sql").write_text(
        "-- polymigrate: phase=contract\n"  # after the full_name release's contract files, so in its phase
        "CREATE TABLE regional_settings (currency char(3) NOT NULL);\n"
        "INSERT INTO regional_settings VALUES ('${currency}');\n")
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))

    pg: dict[str, str] = {}
    clients: dict[str, redis.Redis] = {}
    for region, db in REGIONS.items():
        pg[region] = make_pg_database("pm_e2e")
        monkeypatch.setenv(f"AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_E2E_{region.upper()}", pg[region])
        host, _, port = REDIS_URL.removeprefix("redis://").partition(":")
        monkeypatch.setenv(f"AIRFLOW_CONN_POLYMIGRATE_REDIS_E2E_{region.upper()}", json.dumps(
            {"conn_type": "redis", "host": host, "port": int(port or 6379), "extra": {"db": db}}))
        clients[region] = redis.Redis.from_url(f"{REDIS_URL}/{db}")
        clients[region].flushdb()
        clients[region].set(f"social:user:{db}:profile", "{}")  # what the sample Lua migration renames

    class E2E:
        root = specs
        pg_urls = pg
        redis = clients

        def run(self, domain: str, conf: dict | None = None):
            from polymigrate_airflow.renderer import build_dags

            dag = build_dags(specs)[f"migrate__{domain}__e2e"]
            techs = [t for t in dag.params.get_param("technologies").value if t in RUN_TECHS]
            dr = dag.test(run_conf={"technologies": techs, **(conf or {})})
            states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
            return dr, states

        def ledger(self, domain: str, technology: str, region: str):
            return [(e.version or e.description, e.installed_rank, e.run_id, e.region, e.status.value)
                    for e in self.entries(domain, technology, region)]

        def entries(self, domain: str, technology: str, region: str):
            from tests.conftest import REDIS_URL
            from polymigrate.adapters import adapter_class
            from polymigrate.spec import load_project

            settings = load_project(specs).domains[domain].technologies[technology]
            cls = adapter_class(technology)
            url = pg[region] if technology == "postgresql" else f"{REDIS_URL}/{REGIONS[region]}"
            adapter = cls.from_url(url, domain=domain, settings=settings)
            try:
                return adapter.read_ledger()
            finally:
                adapter.close()

        def expected(self, domain: str, technology: str) -> list[str]:
            from polymigrate.commands import load_domain

            _, _, cat = load_domain(specs, domain)
            return [m.id.removeprefix("R:") for m in cat.applicable(technology)]

    yield E2E()
    for c in clients.values():
        c.flushdb()
        c.close()


def in_release_order(applied: list[str], expected: list[str]) -> bool:
    """Every file applied once, versions in order; a phased domain runs its repeatables (unphased:
    expand) at the end of the expand phase, before the migrate and contract versions."""
    versions = lambda xs: [x for x in xs if x[:1].isdigit()]  # noqa: E731
    return sorted(applied) == sorted(expected) and versions(applied) == versions(expected)


def test_full_run_applies_every_region_then_a_second_run_is_a_no_op(e2e):
    # the e2e env renders V9 with EURO in eastern_europe; fix it for this test
    (e2e.root / "environments" / "e2e.yaml").write_text(env_yaml({**CURRENCY, "eastern_europe": "PLN"}))

    dr, states = e2e.run("common")
    assert dr.state == "success", states
    dr, states = e2e.run("social_commerce")
    assert dr.state == "success", states
    assert states["western_europe.expand_mongodb"] == "skipped"  # not selected by the technologies param
    assert states["north_africa.verify"] == "success"

    for region in REGIONS:
        for domain, tech in (("common", "postgresql"), ("social-commerce", "postgresql"), ("social-commerce", "redis")):
            rows = e2e.ledger(domain, tech, region)
            assert in_release_order([r[0] for r in rows if r[4] == "success"], e2e.expected(domain, tech)), \
                (domain, tech, region)
            assert all(r[3] == region for r in rows)
        assert e2e.redis[region].exists(f"social:user_profile:{REGIONS[region]}")
        # every row names the plan it was applied under (one plan per run and domain)
        hashes = {e.plan_hash for e in e2e.entries("social-commerce", "postgresql", region)}
        assert len(hashes) == 1 and len(hashes.pop() or "") == 64

    before = {r: e2e.ledger("social-commerce", "postgresql", r) for r in REGIONS}
    first_run = dr.run_id
    dr2, states = e2e.run("social_commerce")
    assert dr2.state == "success", states
    assert dr2.run_id != first_run
    after = {r: e2e.ledger("social-commerce", "postgresql", r) for r in REGIONS}
    assert after == before  # nothing applied twice, no new ledger row
    assert {r[2] for rows in after.values() for r in rows} == {first_run}


def test_sequential_rollout_halts_at_the_broken_region_and_resumes_after_the_fix(e2e):
    dr, states = e2e.run("common")
    assert dr.state == "success", states

    dr, states = e2e.run("social_commerce")
    assert dr.state == "failed"
    assert states["western_europe.verify"] == "success"
    assert states["eastern_europe.contract_postgresql"] == "failed"
    assert states["eastern_europe.verify"] == "upstream_failed"
    assert states["north_africa.expand_postgresql"] == "upstream_failed"  # halted: never started

    region_one = e2e.ledger("social-commerce", "postgresql", "western_europe")
    assert "9" in [r[0] for r in region_one]
    broken = [r[0] for r in e2e.ledger("social-commerce", "postgresql", "eastern_europe") if r[4] == "success"]
    assert "9" not in broken and "3" in broken  # everything before the broken file committed, V9 rolled back
    assert e2e.ledger("social-commerce", "postgresql", "north_africa") == []

    # fix the region's value (the file region one ran stays unchanged, so its checksum still matches)
    (e2e.root / "environments" / "e2e.yaml").write_text(env_yaml({**CURRENCY, "eastern_europe": "PLN"}))
    dr2, states = e2e.run("social_commerce")
    assert dr2.state == "success", states
    assert e2e.ledger("social-commerce", "postgresql", "western_europe") == region_one  # not re-applied
    for region in ("eastern_europe", "north_africa"):
        rows = e2e.ledger("social-commerce", "postgresql", region)
        assert in_release_order([r[0] for r in rows if r[4] == "success"], e2e.expected("social-commerce", "postgresql"))
    resumed = [r for r in e2e.ledger("social-commerce", "postgresql", "eastern_europe") if r[0] == "9"]
    assert [r[2] for r in resumed] == [dr2.run_id]


def test_plan_refuses_while_a_dependency_has_pending_migrations(e2e):
    dr, states = e2e.run("social_commerce")
    assert dr.state == "failed"
    assert states["plan"] == "failed"
    assert states["western_europe.expand_postgresql"] == "upstream_failed"
    assert e2e.ledger("social-commerce", "postgresql", "western_europe") == []


def test_a_plan_waits_while_its_dependency_s_dag_is_running_and_runs_once_that_applied(e2e, monkeypatch):
    """The nightly schedule starts every staging rehearsal at the same minute: social-commerce's plan
    finds common pending while common's own DAG run is still going, waits for that run (deferred: no
    worker slot held), and goes on once common applied. With no common run going, it refuses at once
    (the test above)."""
    import os
    import subprocess
    import sys
    import threading
    from datetime import datetime, timedelta, timezone

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from polymigrate_airflow.operators import PlanOperator

    (e2e.root / "environments" / "e2e.yaml").write_text(env_yaml({**CURRENCY, "eastern_europe": "PLN"}))
    # common's DAG run as the scheduler started it beside social-commerce's, still applying
    with create_session() as session:
        session.add(DagRun(dag_id="migrate__common__e2e", run_id="scheduled__tonight", run_type="scheduled",
                           state=DagRunState.RUNNING, run_after=datetime.now(timezone.utc), conf={}))
    monkeypatch.setattr(PlanOperator, "DEPENDENCY_POLL", timedelta(seconds=2))
    seen, looked = [], threading.Event()
    running = PlanOperator.running_dependencies

    def spied(self, context, domains):  # Airflow's own answer, noted for the assertions below
        seen.append(found := running(self, context, domains))
        looked.set()
        return found

    monkeypatch.setattr(PlanOperator, "running_dependencies", spied)
    applied = []

    def common_run_finishes():
        looked.wait(600)
        out = subprocess.run([str(Path(sys.executable).with_name("polymigrate")), "migrate", "-e", "e2e", "-d", "common",
                              "--specs", str(e2e.root)], env=os.environ.copy(), capture_output=True, text=True, timeout=600)
        applied.append(out)
        with create_session() as session:
            session.query(DagRun).filter(DagRun.run_id == "scheduled__tonight").update({"state": DagRunState.SUCCESS})

    finisher = threading.Thread(target=common_run_finishes)
    finisher.start()
    dr, states = e2e.run("social_commerce")
    finisher.join(600)
    assert applied and applied[0].returncode == 0, applied and applied[0].stdout + applied[0].stderr
    assert dr.state == "success", states
    assert seen and all(s == ["migrate__common__e2e"] for s in seen), seen  # it waited for that run, then planned
    for region in REGIONS:
        assert e2e.ledger("social-commerce", "postgresql", region), region


def test_dry_run_changes_nothing(e2e):
    (e2e.root / "environments" / "e2e.yaml").write_text(env_yaml({**CURRENCY, "eastern_europe": "PLN"}))
    dr, states = e2e.run("common", {"dry_run": True})
    assert dr.state == "success", states
    assert all(e2e.ledger("common", "postgresql", r) == [] for r in REGIONS)


def test_blocking_lint_findings_fail_validate_before_any_target_is_touched(e2e):
    (e2e.root / "environments" / "e2e.yaml").write_text(env_yaml(CURRENCY, lint_block_at="high"))
    (e2e.root / "social-commerce" / "postgresql" / "tables" / "V10__drop_created_at.sql").write_text(
        "-- polymigrate: phase=contract\nALTER TABLE users DROP COLUMN created_at;\n")  # ban-drop-column (high), not suppressed
    dr, states = e2e.run("common")
    assert dr.state == "success", states  # common drops nothing
    dr, states = e2e.run("social_commerce")
    assert states["validate"] == "failed"
    assert states["plan"] == "upstream_failed"
    assert all(e2e.ledger("social-commerce", "postgresql", r) == [] for r in REGIONS)
