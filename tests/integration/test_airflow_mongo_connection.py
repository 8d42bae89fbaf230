"""The Airflow layer builds MongoDB clients through MongoHook at execute time, with allowlisted extras."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import MONGO_URI

pytestmark = pytest.mark.integration


def test_mongo_connection_through_mongohook_keeps_only_allowlisted_extras(monkeypatch, make_mongo_database):
    pytest.importorskip("airflow.providers.mongo.hooks.mongo")
    from polymigrate.adapters.mongo import MongoAdapter, MongoConnection
    from polymigrate_airflow.connections import CLIENT_FACTORIES, describe, open_adapter

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
        assert describe(made) == f"mongodb://{where.hostname}:{where.port}/{dbname}"
    finally:
        made.close()
    with open_adapter("mongodb", "shop_mongo", domain="shop") as adapter:
        assert isinstance(adapter, MongoAdapter) and adapter.db.name == dbname
        assert adapter.read_ledger() == []
