"""The CLI's view of Airflow connections (AIRFLOW_CONN_<ID>): URLs that connect where they say."""

import json

import psycopg

from polymigrate.connections import redact, url_for


def test_json_connection_with_special_characters_keeps_its_password_and_tls(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", json.dumps({
        "conn_type": "postgres", "login": "bob", "password": "p#ss/w@rd", "host": "db.internal", "port": 5432,
        "schema": "app", "extra": {"sslmode": "require", "airflow_only": "x"}}))
    url = url_for("shop_db")
    assert psycopg.conninfo.conninfo_to_dict(url) == {
        "user": "bob", "password": "p#ss/w@rd", "host": "db.internal", "port": "5432", "dbname": "app",
        "sslmode": "require"}  # not host 'bob', TLS kept, unknown extras dropped
    assert "p#ss" not in redact(url) and "p%23ss" not in redact(url)


def test_uri_connection_keeps_only_client_extras(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CACHE", "redis://:pw@127.0.0.1:6379/3?ssl_cert_reqs=none&__extra__=x")
    assert url_for("cache") == "redis://:pw@127.0.0.1:6379/3?ssl_cert_reqs=none"
    assert url_for("not_configured") is None


def test_airflow_uri_with_a_socket_directory_keeps_the_host(monkeypatch):
    # How the demo's audit store (pgserver, a unix socket) is written as an Airflow URI: libpq reads
    # host from the query string; dropping it silently pointed the CLI at the default socket.
    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_AUDIT", "postgresql://postgres@/demo_audit?host=/tmp/pg%20sock&__extra__=x")
    assert psycopg.conninfo.conninfo_to_dict(url_for("polymigrate_audit")) == {
        "user": "postgres", "dbname": "demo_audit", "host": "/tmp/pg sock"}


def test_json_connection_with_a_socket_directory_as_host(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_DEMO", json.dumps({"conn_type": "postgres", "host": "/tmp/pgsock", "login": "postgres",
                                                        "schema": "demo_western_europe"}))
    assert psycopg.conninfo.conninfo_to_dict(url_for("demo")) == {
        "user": "postgres", "dbname": "demo_western_europe", "host": "/tmp/pgsock"}
