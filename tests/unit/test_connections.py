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


import pytest  # noqa: E402

from polymigrate.connections import redact  # noqa: E402


@pytest.mark.parametrize("given, shown", [
    ("postgresql://app:s3cret@db:5432/shop", "postgresql://app:***@db:5432/shop"),
    ("postgresql://app@db/shop?sslmode=require&password=s3cret", "postgresql://app@db/shop?sslmode=require&password=***"),
    ("postgresql://app@db/shop?PASSWORD=s3cret&application_name=x", "postgresql://app@db/shop?PASSWORD=***&application_name=x"),
    ("redis://:s3cret@cache:6379/0?password=s3cret", "redis://:***@cache:6379/0?password=***"),
    ("host=db user=app password=s3cret dbname=shop", "host=db user=app password=*** dbname=shop"),
    ("host=db password='s3 cret' dbname=shop", "host=db password=*** dbname=shop"),
    ("postgresql://app@db/shop", "postgresql://app@db/shop"),
])
def test_redact_removes_the_password_wherever_it_was_given(given, shown):
    assert redact(given) == shown and "s3" not in redact(given)
