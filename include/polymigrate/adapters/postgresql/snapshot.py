"""A JSON-able picture of one schema, for drift detection and verification.

Definitions come from PostgreSQL's own deparsers (``pg_get_indexdef``, ``pg_get_constraintdef``,
``pg_get_functiondef``), so two databases with the same schema give the same snapshot whatever
SQL created it. OIDs, sizes and timestamps are left out on purpose: they differ between identical
schemas.
"""

from __future__ import annotations

from typing import Any

import psycopg

_TABLES = """
SELECT c.relname, c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT (c.relname = ANY(%(skip)s))
ORDER BY c.relname"""

_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0
  AND NOT a.attisdropped AND NOT (c.relname = ANY(%(skip)s))
ORDER BY c.relname, a.attnum"""

_INDEXES = """
SELECT i.relname, t.relname, pg_get_indexdef(i.oid), x.indisvalid
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE n.nspname = %(schema)s AND NOT (t.relname = ANY(%(skip)s))
ORDER BY i.relname"""

_CONSTRAINTS = """
SELECT co.conname, t.relname, co.contype::text, pg_get_constraintdef(co.oid)
FROM pg_constraint co JOIN pg_class t ON t.oid = co.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %(schema)s AND NOT (t.relname = ANY(%(skip)s))
ORDER BY t.relname, co.conname"""

_FUNCTIONS = """
SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid), p.prokind::text,
       md5(p.prosrc)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s
ORDER BY p.proname, 2"""

_KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}


def snapshot(conn: psycopg.Connection, schema: str, skip_tables: list[str]) -> dict[str, Any]:
    """Tables (with columns), indexes, constraints and functions of ``schema``."""
    args = {"schema": schema, "skip": skip_tables}
    tables: dict[str, Any] = {name: {"kind": _KINDS[kind], "columns": {}}
                              for name, kind in conn.execute(_TABLES, args).fetchall()}
    for table, col, typ, notnull, default in conn.execute(_COLUMNS, args).fetchall():
        tables[table]["columns"][col] = {"type": typ, "not_null": notnull, "default": default}
    indexes = {name: {"table": table, "definition": d, "valid": valid}
               for name, table, d, valid in conn.execute(_INDEXES, args).fetchall()}
    constraints = {f"{table}.{name}": {"table": table, "type": kind, "definition": d}
                   for name, table, kind, d in conn.execute(_CONSTRAINTS, args).fetchall()}
    functions = {f"{name}({ident})": {"returns": result, "kind": kind, "body_md5": body}
                 for name, ident, result, kind, body in conn.execute(_FUNCTIONS, args).fetchall()}
    return {"schema": schema, "tables": tables, "indexes": indexes, "constraints": constraints,
            "functions": functions}


_INVALID_INDEXES = """
SELECT i.relname, t.relname
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE n.nspname = %(schema)s AND NOT x.indisvalid
ORDER BY i.relname"""

_NOT_VALID = """
SELECT t.relname, co.conname, co.contype::text
FROM pg_constraint co JOIN pg_class t ON t.oid = co.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %(schema)s AND NOT co.convalidated
ORDER BY t.relname, co.conname"""


def invalid_indexes(conn: psycopg.Connection, schema: str) -> list[tuple[str, str]]:
    """(index, table) of every INVALID index in ``schema``: what a failed or interrupted
    ``CREATE INDEX CONCURRENTLY`` leaves behind; it is maintained on every write but never used."""
    return [tuple(r) for r in conn.execute(_INVALID_INDEXES, {"schema": schema}).fetchall()]


def not_valid_constraints(conn: psycopg.Connection, schema: str) -> list[tuple[str, str, str]]:
    """(table, constraint, type) of every constraint added ``NOT VALID`` and never validated."""
    return [tuple(r) for r in conn.execute(_NOT_VALID, {"schema": schema}).fetchall()]
