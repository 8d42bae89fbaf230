"""Airflow connections to a search target: built through the provider hooks at execute time, the
flavour read from GET /, extras allowlisted (the real OpenSearch server; Elasticsearch with ES_URL)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest

from polymigrate.errors import PermanentError


def _conn(monkeypatch, conn_id: str, url: str, conn_type: str, **extra) -> None:
    u = urlsplit(url)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(
        {"conn_type": conn_type, "host": u.hostname, "port": u.port, "extra": extra}))


def test_an_opensearch_connection_builds_the_opensearch_client_without_unlisted_extras(opensearch_target, monkeypatch):
    from polymigrate.adapters import adapter_class
    from polymigrate_airflow.connections import build_client

    t = opensearch_target
    _conn(monkeypatch, "pm_search", t.url, "opensearch", headers={"X-Injected": "1"}, opaque_id="x", timeout=30)
    client = build_client("elasticsearch", "pm_search")
    try:
        assert type(client).__module__.startswith("opensearchpy")
        headers = client.transport.connection_pool.connections[0].headers
        assert "X-Injected" not in headers and "x-injected" not in headers
    finally:
        client.close()
    client = build_client("elasticsearch", "pm_search")  # as AirflowConnector.open builds the adapter
    adapter = adapter_class("elasticsearch")(client, domain="shop", settings=t.settings())
    try:
        assert adapter.read_ledger() == []
        assert adapter.target.startswith("OpenSearch 2.")
    finally:
        adapter.close()
        client.close()


def test_an_http_connection_is_served_by_whatever_the_server_says_it_is(search_target, monkeypatch):
    from polymigrate_airflow.connections import build_client

    t = search_target
    _conn(monkeypatch, "pm_any", t.url, "http")
    client = build_client("elasticsearch", "pm_any")
    try:
        expected = "opensearchpy" if t.engine == "opensearch" else "elasticsearch"
        assert type(client).__module__.split(".")[0] == expected
    finally:
        client.close()


def test_a_missing_connection_is_a_permanent_error_naming_it(monkeypatch):
    from polymigrate_airflow.connections import build_client

    with pytest.raises(PermanentError) as info:
        build_client("elasticsearch", "pm_not_there")
    assert "pm_not_there" in str(info.value)
