"""Issue 23.2: a run's metrics reach a StatsD server through Airflow's own Stats, with their tags.

A real UDP socket on 127.0.0.1 is the StatsD server; Airflow is configured for it the way a user
would (``AIRFLOW__METRICS__STATSD_ON``, host, port, and ``STATSD_INFLUXDB_ENABLED`` so the tags travel
in the InfluxDB style statsd-exporter reads). Two ``dag.test()`` runs on real PostgreSQL: one applies
two files, the next fails on a third (a permanent error).
"""

from __future__ import annotations

import pytest

from tests.e2e.harness import lines_of, write

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


def test_a_runs_metrics_reach_statsd_with_their_tags(tmp_path, make_pg_database, monkeypatch, airflow_db, statsd):
    from polymigrate_airflow.renderer import build_dags

    specs = tmp_path / "specs"
    write(specs / "environments/staging.yaml", """\
        regions: {r1: null}
        policy: {approvals: {required: 0}, retries: 0, lock_wait_seconds: 5}
        """)
    write(specs / "shop/domain.yaml", "technologies: {postgresql: {}}\n")
    write(specs / "shop/postgresql/V1__orders.sql", "CREATE TABLE orders (id bigint PRIMARY KEY);\n")
    write(specs / "shop/postgresql/V2__lines.sql", "CREATE TABLE lines (id bigint PRIMARY KEY);\n")
    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_POSTGRESQL_STAGING_R1", make_pg_database("pm_e2e23_metrics"))

    dr = build_dags(specs)["migrate__shop__staging"].test()
    assert dr.state == "success"
    received = statsd()
    where = {"domain": "shop", "environment": "staging", "region": "r1", "technology": "postgresql"}
    durations = lines_of(received, "polymigrate.migration.duration")
    assert [tags for tags, _ in durations] == [{**where, "phase": "all"}] * 2, received
    assert all(v.endswith("|ms") for _, v in durations)
    assert lines_of(received, "polymigrate.migration.applied") == [({**where, "phase": "all"}, "1|c")] * 2
    (lock_tags, lock_value), = lines_of(received, "polymigrate.lock.wait")
    assert lock_tags == where and lock_value.endswith("|ms")
    assert lines_of(received, "polymigrate.verify.outcome") == [
        ({"domain": "shop", "environment": "staging", "region": "r1", "outcome": "passed"}, "1|c")]
    assert lines_of(received, "polymigrate.verify.failed_checks") == [
        ({"domain": "shop", "environment": "staging", "region": "r1"}, "0|g")]

    received.clear()
    write(specs / "shop/postgresql/V3__bad.sql", "ALTER TABLE orderz ADD COLUMN total numeric;\n")
    dr = build_dags(specs)["migrate__shop__staging"].test()
    assert dr.state == "failed"
    received = statsd()
    assert lines_of(received, "polymigrate.migration.failed") == [
        ({**where, "step": "execute", "final": "true"}, "1|c")], received
    assert lines_of(received, "polymigrate.migration.applied") == []
