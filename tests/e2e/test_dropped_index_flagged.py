"""Issue 23.4: a migration that drops an index the workload used is flagged by verify.

Two ``dag.test()`` runs on real PostgreSQL with a real audit store: the first creates a table and its
index, then a workload reads through the index (``pg_stat_user_indexes`` counts it); the second run's
file drops the index, and that run's verify fails naming the index, how often it was used and what to
do; a policy threshold above the usage lets it pass. An index nobody used is dropped without a word.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.e2e.harness import audit_store, shop_specs, write

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def env_yaml(min_scans: int) -> str:
    return f"regions: {{r1: null}}\npolicy: {{approvals: {{required: 0}}, retries: 0, lock_wait_seconds: 5, " \
           f"dropped_index_min_scans: {min_scans}}}\n"


def staging_release(tmp_path: Path, monkeypatch, target: str, audit: str, v1: str):
    """(specs, audit store): the shop domain's first file ``v1`` for staging's one region at ``target``."""
    specs = shop_specs(tmp_path / "specs", {"staging": env_yaml(1)}, {"V1__orders.sql": v1})
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_STAGING_R1", target)
    return specs, audit_store(monkeypatch, audit)


def test_verify_flags_a_dropped_index_the_workload_used(tmp_path, make_pg_database, monkeypatch, airflow_db):
    from polymigrate_airflow.renderer import build_dags

    target = make_pg_database("pm_e2e23_idx")
    specs, store = staging_release(tmp_path, monkeypatch, target, make_pg_database("pm_e2e23_idx_audit"), """\
        CREATE TABLE orders (id bigint PRIMARY KEY, customer bigint NOT NULL, note text);
        CREATE INDEX orders_customer ON orders (customer);
        CREATE INDEX orders_note ON orders (note);
        INSERT INTO orders SELECT g, g % 100, NULL FROM generate_series(1, 5000) g;
        ANALYZE orders;
        """)
    assert build_dags(specs)["migrate__shop__staging"].test().state == "success"

    with psycopg.connect(target, autocommit=True) as conn:  # the application's reads, through the index
        for customer in range(7):
            conn.execute("SELECT count(*) FROM orders WHERE customer = %s", (customer,)).fetchone()
        conn.execute("SELECT pg_stat_force_next_flush()")  # PostgreSQL 15 flushes a session's counts at its end or after a second
    # the cleanup of the expand/contract release: both old indexes go
    write(specs / "shop/postgresql/V2__drop_old_indexes.sql", """\
        DROP INDEX orders_customer;
        DROP INDEX IF EXISTS orders_note;
        """)
    dr = build_dags(specs)["migrate__shop__staging"].test()
    tis = {ti.task_id: ti for ti in dr.get_task_instances()}
    assert tis["r1.postgresql"].state == "success"  # the drop itself ran
    assert tis["r1.verify"].state == "failed" and dr.state == "failed"
    (failed,) = [r.event for r in store.query(kind="verify_failed", run_id=dr.run_id)]
    (check,) = [c for c in failed.details["checks"] if c["name"] == "dropped index used by the workload"]
    assert not check["ok"]
    assert check["detail"].startswith("index orders_customer on orders was used 7 time(s) before this run dropped it")
    assert "CREATE INDEX CONCURRENTLY" in check["detail"] and "orders_note" not in check["detail"]
    (baseline,) = [r.event for r in store.query(kind="impact_baseline", run_id=dr.run_id)]
    assert baseline.details["dropped_indexes"]["orders_note"]["scans"] == 0

    # the same evidence under a threshold above it: verify passes, saying what it dropped
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE INDEX orders_by_customer ON orders (customer)")
        for customer in range(3):
            conn.execute("SELECT count(*) FROM orders WHERE customer = %s", (customer,)).fetchone()
        conn.execute("SELECT pg_stat_force_next_flush()")
    write(specs / "shop/postgresql/V3__drop_by_customer.sql", "DROP INDEX orders_by_customer;\n")
    write(specs / "environments/staging.yaml", env_yaml(50))
    dr = build_dags(specs)["migrate__shop__staging"].test()
    assert dr.state == "success"
    (verified,) = [r.event for r in store.query(kind="verified", run_id=dr.run_id)]
    (check,) = [c for c in verified.details["checks"] if c["name"] == "dropped index used by the workload"]
    assert check["ok"] and check["detail"] == "dropped orders_by_customer: used fewer than 50 time(s)"
    store.close()


@pytest.fixture(scope="module")
def pg_with_statements():
    """A private PostgreSQL (the engines' binaries) with pg_stat_statements preloaded: the shared test
    server has no shared_preload_libraries, and it must not be restarted under other tests."""
    import os
    import shutil
    import subprocess

    from scripts.airflow_local import free_port

    bin_dir = Path(os.environ.get("POLYMIGRATE_PG_BIN") or "/usr/lib/postgresql/15/bin")
    if not (bin_dir / "initdb").exists():
        pytest.skip(f"no PostgreSQL binaries in {bin_dir} (POLYMIGRATE_PG_BIN)")
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="polymigrate-pgss-"))  # not under pytest's root-only folder: initdb runs as postgres
    home.chmod(0o777)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    port = free_port()
    subprocess.run([*as_postgres, str(bin_dir / "initdb"), "-D", str(home / "data"), "-U", "postgres", "-A", "trust",
                    "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True, cwd="/")
    subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(home / "data"), "-l", str(home / "log"), "-w",
                    "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1 "
                          "-c shared_preload_libraries=pg_stat_statements", "start"],
                   check=True, capture_output=True, cwd="/")
    url = f"postgresql://postgres@127.0.0.1:{port}/{{}}".format
    admin = url("postgres")
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in ("target", "audit"):
                conn.execute(f"CREATE DATABASE {name}")
        with psycopg.connect(url("target"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")  # what the DBA does where statements should show
        yield url("target"), url("audit")
    finally:
        subprocess.run([*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(home / "data"), "-m", "immediate", "-w",
                        "stop"], capture_output=True, cwd="/")
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.engine("postgresql")  # its own server, started by the fixture
def test_the_finding_names_the_statements_that_used_the_index(tmp_path, monkeypatch, airflow_db, pg_with_statements):
    from polymigrate_airflow.renderer import build_dags

    target, audit = pg_with_statements
    specs, store = staging_release(tmp_path, monkeypatch, target, audit, """\
        CREATE TABLE orders (id bigint PRIMARY KEY, customer bigint NOT NULL);
        CREATE INDEX orders_customer ON orders (customer);
        INSERT INTO orders SELECT g, g % 100 FROM generate_series(1, 5000) g;
        ANALYZE orders;
        """)
    assert build_dags(specs)["migrate__shop__staging"].test().state == "success"
    with psycopg.connect(target, autocommit=True) as conn:
        for customer in range(5):
            conn.execute("SELECT count(*) FROM orders WHERE customer = %s", (customer,)).fetchone()
        conn.execute("SELECT pg_stat_force_next_flush()")
    write(specs / "shop/postgresql/V2__drop_customer_index.sql", "DROP INDEX orders_customer;\n")
    dr = build_dags(specs)["migrate__shop__staging"].test()
    assert dr.state == "failed"
    (failed,) = [r.event for r in store.query(kind="verify_failed", run_id=dr.run_id)]
    (check,) = [c for c in failed.details["checks"] if c["name"] == "dropped index used by the workload"]
    assert "index orders_customer on orders was used 5 time(s)" in check["detail"]
    assert "statements on orders: SELECT count(*) FROM orders WHERE customer = $1 (5 calls, mean " in check["detail"]
    store.close()
