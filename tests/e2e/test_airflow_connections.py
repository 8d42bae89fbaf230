"""Airflow connection → client, through the provider hooks, against the real PostgreSQL server."""

from __future__ import annotations

import psycopg
import pytest

from tests.conftest import PG_ADMIN_URL

pytestmark = [pytest.mark.integration]


def test_uri_with_the_socket_directory_in_the_query_reaches_that_socket(monkeypatch, pg_url):
    # postgresql://user@/db?host=/socket/dir is how a unix socket is written as a URI (the demo's
    # pgserver listens on one); the hook puts that host in the extras, where it used to be dropped.
    from polymigrate_airflow.connections import postgres_client

    with psycopg.connect(PG_ADMIN_URL) as conn:
        socket_dir = conn.execute("SHOW unix_socket_directories").fetchone()[0].split(",")[0].strip()
        port = conn.execute("SHOW port").fetchone()[0]
    dbname = pg_url.rsplit("/", 1)[1]
    monkeypatch.setenv("AIRFLOW_CONN_PM_SOCKET_TEST", f"postgresql://postgres@/{dbname}?host={socket_dir}&port={port}")
    kwargs = postgres_client("pm_socket_test")
    assert kwargs["host"] == socket_dir
    with psycopg.connect(**kwargs) as conn:
        assert conn.info.dbname == dbname and conn.pgconn.host.decode() == socket_dir
