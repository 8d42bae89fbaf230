"""Adopt a Flyway-managed database: copy its ``flyway_schema_history`` into polymigrate's ledger.

Rows keep their rank, version, description, script, checksum, author and timestamps, so the next
``migrate`` sees every Flyway migration as applied (the catalog's checksum is Flyway's CRC32) and
runs only what is new. Flyway's own markers map onto statuses: ``BASELINE`` rows, and applied
migrations polymigrate has no file type for (Java ``JDBC``, ``SCRIPT``), become baselines,
a failed row becomes ``failed`` (resumed or repaired like ours), ``DELETE`` rows (Flyway repair)
and ``UNDO_*`` rows mark the versions they name deleted or undone. A version Flyway recorded as
succeeding twice (two Flyway runs that raced) keeps its first row; the later ones are imported as
``deleted`` with ``duplicate_of``, since the ledger admits one success per version.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

import psycopg
from psycopg import sql

from polymigrate.adapters.postgresql.errors import classify
from polymigrate.errors import PermanentError
from polymigrate.ledger import LedgerEntry, RunContext, Status

if TYPE_CHECKING:
    from polymigrate.adapters.postgresql.ledger import LedgerTable

# Flyway types polymigrate has files for; other applied rows (JDBC, SCRIPT, …) are kept as baselines
log = logging.getLogger(__name__)
_RUNNABLE = ("SQL", "UNDO_SQL", "DELETE", "SCHEMA")
_FLYWAY_COLUMNS = ("installed_rank", "version", "description", "type", "script", "checksum", "installed_by",
                   "installed_on", "execution_time", "success")


def import_history(conn: psycopg.Connection, ledger: "LedgerTable", existing: list[LedgerEntry],
                   fence: Callable[[psycopg.Connection], None], ctx: RunContext, *, target: str, domain: str,
                   schema: str, table: str) -> int:
    """See ``PostgresAdapter.import_flyway``: ``existing`` is the ledger read before, and ``fence`` is
    called inside the import's transaction so a runner whose lock was taken over writes nothing."""
    source = f"{schema}.{table}"
    try:
        if conn.execute("SELECT to_regclass(%s)", (sql.Identifier(schema, table).as_string(conn),)).fetchone()[0] is None:
            raise PermanentError(f"no Flyway history table {source} in {target}",
                                 hint="pass the schema/table Flyway used (flyway.defaultSchema / flyway.table)")
        rows = conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY installed_rank").format(
            sql.SQL(", ").join(map(sql.Identifier, _FLYWAY_COLUMNS)), sql.Identifier(schema, table))).fetchall()
    except psycopg.Error as exc:
        raise classify(exc, file=source, what="cannot read the Flyway history") from exc
    imported = {e.installed_rank for e in existing if e.progress.get("imported_from") == source}
    if existing and {r[0] for r in rows} <= imported:
        return 0  # already imported
    if any(e.status is not Status.DELETED for e in existing):
        raise PermanentError(f"the ledger of {domain} already has {len(existing)} row(s); "
                             f"importing {source} would mix two histories", file=ledger.qualified,
                             hint="import into a fresh ledger (set a different `ledger:` table), or drop the "
                                  "polymigrate rows of this domain first")
    values: list[dict] = []
    for r in rows:
        d = dict(zip(_FLYWAY_COLUMNS, r))
        kind = (d["type"] or "").upper()
        status = Status.SUCCESS if d["success"] else Status.FAILED
        if kind in ("BASELINE", "SQL_BASELINE") or (kind not in _RUNNABLE and d["success"]):
            status = Status.BASELINE  # applied, but polymigrate has no file to compare it with (e.g. Java)
        elif kind == "DELETE" or (kind.startswith("UNDO") and d["success"]):
            _mark_previous(values, d["version"], d["description"], Status.DELETED if kind == "DELETE" else Status.UNDONE)
            status = Status.DELETED if kind == "DELETE" else Status.SUCCESS
        values.append({**d, "status": status, "domain": domain, "run_id": ctx.run_id,
                       "environment": ctx.environment, "region": ctx.region,
                       "progress": {"imported_from": source}})
    _keep_first_success(values, source)
    try:
        with conn.transaction():
            fence(conn)
            for v in values:
                ledger.insert_raw(conn, v)
    except psycopg.Error as exc:
        raise classify(exc, file=source, what="cannot import the Flyway history") from exc
    return len(values)


def _keep_first_success(values: list[dict], source: str) -> None:
    first: dict[str, int] = {}
    for v in values:
        if v["status"] is not Status.SUCCESS or v["version"] is None or (v["type"] or "").upper().startswith("UNDO"):
            continue
        if v["version"] in first:
            log.warning("%s records version %s as applied twice (ranks %s and %s): importing the second as deleted",
                        source, v["version"], first[v["version"]], v["installed_rank"])
            v["status"] = Status.DELETED
            v["progress"] = {**v["progress"], "duplicate_of": first[v["version"]]}
        else:
            first[v["version"]] = v["installed_rank"]


def _mark_previous(values: list[dict], version: str | None, description: str, status: Status) -> None:
    for v in reversed(values):
        same = v["version"] == version if version is not None else (v["version"] is None and v["description"] == description)
        if same and not v["type"].upper().startswith(("UNDO", "DELETE")) and v["status"] is not Status.DELETED:
            v["status"] = status
            return
