"""The shared adapter conformance suite, run against the MongoDB-protocol server at MONGO_URI
(FerretDB from `make engines`, or a real MongoDB)."""

from __future__ import annotations

import pytest

from polymigrate.adapters.mongodb.adapter import MongoAdapter
from tests.conformance.adapter_suite import AdapterConformance, AdapterKit

pytestmark = pytest.mark.integration

CREATE_ORDERS = """{
  "description": "Orders with a customer index",
  "commands": [
    {"create": "orders"},
    {"createIndexes": "orders", "indexes": [{"key": {"customer_id": 1, "placed_at": -1}, "name": "customer_recent"}]}
  ],
  "down": [{"drop": "orders"}]
}
"""
SEED_ORDERS = """{
  "description": "Two orders",
  "commands": [
    {"insert": "orders", "documents": [{"_id": 1, "customer_id": 7, "total": 10}, {"_id": 2, "customer_id": 8, "total": 12}]}
  ]
}
"""
BROKEN = """{
  "description": "A unique index the data violates",
  "commands": [
    {"insert": "orders", "documents": [{"_id": 3, "customer_id": 7}]},
    {"insert": "orders", "documents": [{"_id": 1, "customer_id": 9}]}
  ]
}
"""


class TestMongoConformance(AdapterConformance):
    @pytest.fixture
    def kit(self, mongo_url, tmp_path):
        return AdapterKit(
            technology="mongodb",
            make_adapter=lambda: MongoAdapter.from_url(mongo_url, domain="conformance"),
            good_files={"1-create-orders.json": CREATE_ORDERS, "2-seed-orders.json": SEED_ORDERS},
            broken_file=("3-broken.json", BROKEN),
            tmp_path=tmp_path,
            edit=lambda text: text.replace('"description": "', '"description": "edited: ', 1),
            # the first command refused by the server (a collection that exists): nothing of the file ran
            nothing_run_file=("3-orders-again.json",
                              '{"description": "x", "commands": [{"create": "orders"}]}\n',
                              '{"description": "x", "commands": [{"create": "order_notes"}]}\n'),
        )
