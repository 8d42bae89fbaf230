"""The Airflow layer builds MongoDB clients through MongoHook at execute time, with allowlisted extras."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import MONGO_URI

pytestmark = pytest.mark.integration


def test_mongo_connection_through_mongohook_keeps_only_allowlisted_extras(monkeypatch, make_mongo_database):
    pytest.importorskip("airflow.providers.mongo.hooks.mongo")
    from polymigrate.adapters.mongodb.adapter import MongoAdapter, MongoConnection
    from polymigrate.adapters import adapter_class
    from polymigrate_airflow.connections import CLIENT_FACTORIES, build_client

    dbname = urlsplit(make_mongo_database("pm_af")).path.strip("/")
    where = urlsplit(MONGO_URI)
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_MONGO", json.dumps({
        "conn_type": "mongo", "host": where.hostname, "port": where.port, "schema": dbname,
        "extra": {"appName": "polymigrate-test", "connectTimeoutMS": 5000, "directConnection": True,
                  "maxPoolSize": 1, "document_class": "builtins.dict", "unexpected": "x"}}))
    made = CLIENT_FACTORIES["mongodb"]("shop_mongo")
    try:
        assert isinstance(made, MongoConnection) and made.database == dbname
        query = parse_qs(urlsplit(made.url).query)
        assert query == {"appName": ["polymigrate-test"], "connectTimeoutMS": ["5000"], "directConnection": ["true"]}
        assert made.client.options.pool_options.max_pool_size != 1  # maxPoolSize was not allowlisted
    finally:
        made.close()
    client = build_client("mongodb", "shop_mongo")  # as AirflowConnector.open builds the adapter
    adapter = adapter_class("mongodb")(client, domain="shop")
    try:
        assert isinstance(adapter, MongoAdapter) and adapter.db.name == dbname
        assert adapter.target.endswith(f"{where.hostname}:{where.port}/{dbname}")  # what the task log shows
        assert adapter.read_ledger() == []
    finally:
        adapter.close()
        client.close()
