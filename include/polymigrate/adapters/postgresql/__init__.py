"""The PostgreSQL adapter (registry key ``postgresql``): ``adapter`` (``PostgresAdapter``), its ledger
table, errors, statement splitter, backfill, snapshot, repair and Flyway adoption.

Only the descriptor is defined here, so reading ``statements`` (lint) does not import the adapter and
psycopg."""

from __future__ import annotations

from polymigrate.adapters.technology import Technology

DESCRIPTOR = Technology(
    key="postgresql",
    adapter="polymigrate.adapters.postgresql.adapter:PostgresAdapter",
    extensions=(".sql",),
    schemes=("postgresql", "postgres"),
    default_port=5432,
    extras=frozenset({"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "connect_timeout",
                      "application_name", "target_session_attrs", "keepalives", "keepalives_idle",
                      "keepalives_interval", "keepalives_count", "gssencmode", "channel_binding"}),
    template="-- {description}\n-- polymigrate: lock_timeout=5s\n\n",
    client_factory="postgres_client",
    operator="PostgresMigrationOperator",
    ui_color="#cfe3f3",
    ledger_type="SQL",
    naming="flyway",
)
