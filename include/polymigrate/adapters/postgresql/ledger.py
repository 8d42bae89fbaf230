"""The PostgreSQL ledger table: a superset of Flyway's ``flyway_schema_history``.

Flyway's columns keep their names, types and meaning, so a Flyway history imports row for row and
tools reading Flyway's table read ours; polymigrate adds status, progress, domain and run context.
Rows are scoped by ``domain`` so several domains can share one database and one ledger table.
Every identifier goes through ``psycopg.sql.Identifier``; every value is a bound parameter.

A partial unique index lets one versioned migration succeed once per domain: a second ``success``
row for the same version (two runs that both believed they held the lock) fails its transaction,
taking the file's changes with it. Undo rows, repeatables and rows repair marked ``deleted`` or
``undone`` stay outside it, so undo/redo and Flyway histories import as before. Ledgers created
by earlier versions get the index on first use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from polymigrate.catalog import Migration
from polymigrate.ledger import LedgerEntry, RunContext, Status

DEFAULT_SCHEMA = "polymigrate"
DEFAULT_TABLE = "schema_history"

_COLUMNS = ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by",
            "installed_on", "execution_time", "success", "status", "domain", "sha256", "run_id",
            "environment", "region", "plan_hash", "progress")
# Flyway's own column widths: values are cut to fit rather than failing a migration that already ran
_WIDTH = {"version": 50, "description": 200, "type": 20, "script": 1000, "installed_by": 100}

_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    installed_rank integer NOT NULL,
    version varchar(50),
    description varchar(200) NOT NULL,
    type varchar(20) NOT NULL,
    script varchar(1000) NOT NULL,
    checksum integer,
    installed_by varchar(100) NOT NULL,
    installed_on timestamp NOT NULL DEFAULT now(),
    execution_time integer NOT NULL,
    success boolean NOT NULL,
    status text NOT NULL DEFAULT 'success',
    domain text NOT NULL DEFAULT '',
    sha256 text,
    run_id text,
    environment text,
    region text,
    plan_hash text,
    progress jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    PRIMARY KEY (domain, installed_rank)
)"""

# One success per (domain, version); UNDO_* rows share the version of what they undid.
_ONCE_DDL = ("CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {table} (domain, version) "
             "WHERE status = 'success' AND version IS NOT NULL AND type NOT LIKE 'UNDO%'")

_LOCK_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    lock_key bigint PRIMARY KEY,
    owner text NOT NULL,
    pid integer NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
)"""


class _Elapsed:
    """Marker value: let the server fill ``execution_time`` with the transaction's elapsed time.

    With pipelined statements the client learns the time only after the commit; the server knows it
    when the ledger row is written, inside the same transaction.
    """

    sql = sql.SQL("(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer")


ELAPSED = _Elapsed()


def _value(column: str, value: Any) -> sql.Composable:
    return value.sql if isinstance(value, _Elapsed) else sql.Placeholder(column)


def parse_ledger_name(name: str | None) -> tuple[str, str]:
    """``schema.table`` or ``table`` (in the ``polymigrate`` schema) → (schema, table)."""
    if not name:
        return DEFAULT_SCHEMA, DEFAULT_TABLE
    schema, dot, table = name.rpartition(".")
    return (schema if dot else DEFAULT_SCHEMA), table


def _cut(column: str, value: Any) -> Any:
    width = _WIDTH.get(column)
    return value[:width] if width and isinstance(value, str) else value


@dataclass
class LedgerTable:
    """SQL for one ledger table; the adapter supplies the connection."""

    schema: str
    table: str
    _inserts: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table)

    @property
    def lock_ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.table + "_lock")

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def once_index(self) -> str:
        """Name of the one-success-per-version index (within PostgreSQL's 63 characters)."""
        return self.table[:44] + "_version_once"

    def exists(self, conn: psycopg.Connection) -> tuple[bool, bool]:
        """(ledger and lock tables exist, the one-success index exists)."""
        name = sql.Identifier(self.schema, self.table).as_string(conn)
        lock = self.lock_ident.as_string(conn)
        index = sql.Identifier(self.schema, self.once_index).as_string(conn)
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL, "
                           "to_regclass(%s) IS NOT NULL", (name, lock, index)).fetchone()
        return bool(row and row[0]), bool(row and row[1])

    def create(self, conn: psycopg.Connection, guard_key: int, *, tables: bool = True) -> None:
        """Create schema, tables and index; a transaction-scoped advisory lock serialises concurrent first
        runs (two ``CREATE TABLE IF NOT EXISTS`` racing can otherwise fail on pg_type's unique index).
        ``tables=False`` only adds the index to a ledger an earlier version created."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (guard_key,))
            if tables:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                conn.execute(sql.SQL(_DDL).format(table=self.ident))
                conn.execute(sql.SQL(_LOCK_DDL).format(table=self.lock_ident))
            conn.execute(sql.SQL(_ONCE_DDL).format(index=sql.Identifier(self.once_index), table=self.ident))

    def duplicate_successes(self, conn: psycopg.Connection) -> list[tuple[str, str, list[int]]]:
        """(domain, version, ranks) of every versioned migration recorded as succeeding more than once."""
        q = sql.SQL("SELECT domain, version, array_agg(installed_rank ORDER BY installed_rank) FROM {t} "
                    "WHERE status = 'success' AND version IS NOT NULL AND type NOT LIKE 'UNDO%' "
                    "GROUP BY domain, version HAVING count(*) > 1 ORDER BY domain, min(installed_rank)").format(t=self.ident)
        return [(d, v, list(r)) for d, v, r in conn.execute(q).fetchall()]

    def select(self, conn: psycopg.Connection, domain: str) -> list[LedgerEntry]:
        q = sql.SQL("SELECT {cols} FROM {t} WHERE domain = %s ORDER BY installed_rank").format(
            cols=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)), t=self.ident)
        return [row_to_entry(r) for r in conn.execute(q, (domain,)).fetchall()]

    def insert(self, conn: psycopg.Connection, values: dict[str, Any], *, rank: bool = True) -> int | None:
        """Insert one row at the next rank of its domain; returns the rank (when ``rank``).

        The rank is computed in the same statement, and runs hold the migration lock, so ranks
        stay dense per domain. Prepared: it runs once per file on the hot path, where ``rank=False``
        keeps the pipeline flowing (fetching a result would wait for the server mid-file).
        """
        cols = [c for c in _COLUMNS if c in values and c != "installed_rank"]
        key = (tuple(cols), tuple(isinstance(values[c], _Elapsed) for c in cols), rank, conn.info.encoding)
        q = self._inserts.get(key)
        if q is None:  # composed once per shape, not once per file (issue 24)
            q = self._inserts[key] = sql.SQL(
                "INSERT INTO {t} (installed_rank, {cols}) SELECT coalesce(max(installed_rank), 0) + 1, {vals} "
                "FROM {t} WHERE domain = %(domain)s{ret}").format(
                t=self.ident, cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
                vals=sql.SQL(", ").join(_value(c, values[c]) for c in cols),
                ret=sql.SQL(" RETURNING installed_rank" if rank else "")).as_bytes(conn)
        params = {c: _param(c, values[c]) for c in cols if not isinstance(values[c], _Elapsed)}
        cur = conn.execute(q, params)
        if not rank:
            return None
        row = cur.fetchone()
        assert row is not None
        return int(row[0])

    def insert_raw(self, conn: psycopg.Connection, values: dict[str, Any]) -> None:
        """Insert a row keeping its rank (Flyway import)."""
        cols = [c for c in _COLUMNS if c in values]
        q = sql.SQL("INSERT INTO {t} ({cols}) VALUES ({vals})").format(
            t=self.ident, cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
            vals=sql.SQL(", ").join(sql.Placeholder(c) for c in cols))
        conn.execute(q, {c: _param(c, values[c]) for c in cols})

    def update(self, conn: psycopg.Connection, domain: str, rank: int, values: dict[str, Any]) -> None:
        q = sql.SQL("UPDATE {t} SET {sets} WHERE domain = %(domain_)s AND installed_rank = %(rank_)s").format(
            t=self.ident, sets=sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(c), _value(c, v)) for c, v in values.items()))
        params = {c: _param(c, v) for c, v in values.items() if not isinstance(v, _Elapsed)}
        conn.execute(q, {**params, "domain_": domain, "rank_": rank})


def _param(column: str, value: Any) -> Any:
    if column == "progress":
        return psycopg.types.json.Jsonb(value or {})
    if column == "status" and isinstance(value, Status):
        return value.value
    return _cut(column, value)


def row_to_entry(row: tuple) -> LedgerEntry:
    d = dict(zip(_COLUMNS, row))
    progress = d["progress"]
    if isinstance(progress, str):
        progress = json.loads(progress)
    d["progress"] = progress or {}
    d["status"] = Status(d["status"])
    return LedgerEntry(**d)


def row_values(migration: Migration, ctx: RunContext, *, status: Status, execution_time: int | _Elapsed = 0,
               progress: dict | None = None, plan_hash: str | None = None) -> dict[str, Any]:
    """The ledger columns for one migration run by ``ctx``."""
    return {
        "version": str(migration.version) if migration.version is not None else None,
        "description": migration.description, "type": migration.ledger_type, "script": migration.script,
        "checksum": migration.checksum, "installed_by": ctx.actor or "unknown",
        "execution_time": execution_time, "success": status in (Status.SUCCESS, Status.BASELINE),
        "status": status, "domain": ctx.domain, "sha256": migration.sha256, "run_id": ctx.run_id,
        "environment": ctx.environment, "region": ctx.region, "plan_hash": plan_hash,
        "progress": progress or {},
    }
