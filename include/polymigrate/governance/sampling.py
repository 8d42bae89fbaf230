"""A bounded sample of a column's values, for lint's label suggestions (``lint --url``): read only,
``SAMPLE_LIMIT`` rows, identifiers quoted by the driver. A column the target does not have yet (a new
one) suggests nothing from values; its name still does."""

from __future__ import annotations

from typing import Callable

from polymigrate.governance.recognisers import SAMPLE_LIMIT, Suggestion, by_values


def pg_sampler(connection, schema: str | None) -> Callable[[str], Suggestion | None]:
    """``table.column`` → what a sample of its values holds (None: nothing recognised, or not there)."""
    from psycopg import sql

    def sample(obj: str) -> Suggestion | None:
        table, _, column = obj.rpartition(".")
        found = connection.execute(
            "SELECT n.nspname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = %s AND a.attname = %s "
            "AND NOT a.attisdropped ORDER BY n.nspname = %s DESC LIMIT 1", (table, column, schema or "")).fetchone()
        if found is None:
            return None
        rows = connection.execute(sql.SQL("SELECT {}::text FROM {}.{} WHERE {} IS NOT NULL LIMIT {}").format(
            sql.Identifier(column), sql.Identifier(found[0]), sql.Identifier(table), sql.Identifier(column),
            sql.Literal(SAMPLE_LIMIT))).fetchall()
        return by_values(r[0] for r in rows)

    return sample
