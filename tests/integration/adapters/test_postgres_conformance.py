"""The shared adapter conformance suite, run against the real PostgreSQL server."""

from __future__ import annotations

import pytest

from polymigrate.adapters.postgresql.adapter import PostgresAdapter
from tests.conformance.adapter_suite import AdapterConformance, AdapterKit

pytestmark = pytest.mark.integration


class TestPostgresConformance(AdapterConformance):
    @pytest.fixture
    def kit(self, pg_url, tmp_path):
        return AdapterKit(
            technology="postgresql",
            make_adapter=lambda: PostgresAdapter.from_url(pg_url, domain="conformance"),
            good_files={
                "V1__create_orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL);\n",
                "V2__index_orders.sql": "CREATE INDEX orders_total ON orders (total);\n",
            },
            broken_file=("V3__broken.sql", "ALTER TABLE orders ADD COLUMN note text;\nALTER TABLE nope ADD x int;\n"),
            tmp_path=tmp_path,
            # a transactional file rolls back whole: nothing of it committed
            nothing_run_file=("V3__note.sql", "ALTER TABLE ordres ADD COLUMN note text;\n",
                              "ALTER TABLE orders ADD COLUMN note text;\n"),
            undo_file=("U2__index_orders.sql", "DROP INDEX orders_total;\n"),
        )
