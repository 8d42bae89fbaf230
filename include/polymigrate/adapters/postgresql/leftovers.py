"""Repair what a killed non-transactional statement left behind, before a retry re-runs it.

A ``CREATE INDEX CONCURRENTLY`` interrupted half way leaves an INVALID index that blocks the
re-run ("already exists") and slows every write; one that finished just before the process died
left a valid index the ledger does not know about yet. ``REINDEX CONCURRENTLY`` leaves
``*_ccnew``/``*_ccold`` indexes; ``DROP INDEX CONCURRENTLY`` may have finished already.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

from polymigrate.adapters.postgresql.statements import Statement

log = logging.getLogger(__name__)


def _regclass(conn: psycopg.Connection, schema: str | None, name: str) -> int | None:
    ident = sql.Identifier(*([schema, name] if schema else [name])).as_string(conn)
    row = conn.execute("SELECT to_regclass(%s)::oid", (ident,)).fetchone()
    return row[0] if row and row[0] is not None else None


def _drop_invalid(conn: psycopg.Connection, table_oid: int, name_pattern: str | None = None) -> list[str]:
    rows = conn.execute(
        "SELECT n.nspname, i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "JOIN pg_namespace n ON n.oid = i.relnamespace "
        "WHERE x.indrelid = %s AND NOT x.indisvalid AND (%s::text IS NULL OR i.relname ~ %s)",
        (table_oid, name_pattern, name_pattern)).fetchall()
    for schema, name in rows:
        log.warning("dropping INVALID index %s.%s left by an interrupted run", schema, name)
        conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(schema, name)))
    return [f"{s}.{n}" for s, n in rows]


def repair_leftover(conn: psycopg.Connection, statement: Statement) -> bool:
    """Clean up after an interrupted run of ``statement``; True when it had in fact completed."""
    target = statement.index_target
    if target is None:
        return False
    if target.action == "create":
        if target.name:
            oid = _regclass(conn, target.schema, target.name)
            if oid is None:
                return False
            valid = conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s", (oid,)).fetchone()
            if valid and valid[0]:
                return True  # built before the process died; only the progress mark was lost
            log.warning("dropping INVALID index %s left by an interrupted CREATE INDEX CONCURRENTLY", target.name)
            conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
                sql.Identifier(*([target.schema, target.name] if target.schema else [target.name]))))
            return False
        table = _regclass(conn, target.schema, target.table) if target.table else None
        if table is not None:
            _drop_invalid(conn, table)  # an unnamed build: any invalid index on the table is a leftover
        return False
    if target.action == "drop":
        return bool(target.name) and _regclass(conn, target.schema, target.name) is None
    if target.action == "reindex" and target.name:
        oid = _regclass(conn, target.schema, target.name)
        if oid is None:
            return False
        row = conn.execute("SELECT coalesce((SELECT indrelid FROM pg_index WHERE indexrelid = %s), %s)",
                           (oid, oid)).fetchone()
        _drop_invalid(conn, row[0], r"_cc(new|old)[0-9]*$")
    return False
