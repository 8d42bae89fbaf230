"""The PostgreSQL adapter (registry key ``postgresql``): ``adapter`` (``PostgresAdapter``), its ledger
table, errors, statement splitter, backfill, snapshot, repair and Flyway adoption.

Nothing is imported here, so reading ``statements`` (lint) does not import the adapter and psycopg."""
