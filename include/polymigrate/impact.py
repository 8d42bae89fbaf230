"""Performance impact of a migration (issue 23.4), checked by verify: evidence read around execute.

What is checked today, on PostgreSQL: **an index the workload used that the migration drops.**
Before a target's files run, the execute step parses the pending files for ``DROP INDEX`` (the same
pglast parse the lint uses) and reads, for each index still there, how often the workload used it
(``pg_stat_user_indexes.idx_scan``, since the server's statistics were last reset) and, when the
``pg_stat_statements`` extension is installed in the database, the statements on its table with their
calls and mean time. That evidence goes to the audit store (``impact_baseline``); verify turns each
index used at least ``policy.dropped_index_min_scans`` times into a failed check naming the index, its
scans and those statements, which fails or warns as ``policy.verify_failures`` says, like every
built-in check, and so reaches verify's log, the audit page and the notifications.

Reading the statistics never fails a migration: a target without them reports nothing.
"""

from __future__ import annotations

import re
from typing import Any

from polymigrate.adapters.base import Check
from polymigrate.catalog import Migration

CHECK = "dropped index used by the workload"
STATEMENTS_SHOWN = 5


def dropped_indexes(migration: Migration, placeholders: dict[str, str] | None = None) -> list[str]:
    """``schema.index`` or ``index`` names a PostgreSQL file drops (``DROP INDEX [CONCURRENTLY]``)."""
    from pglast import ast, enums

    from polymigrate.lint.pgast import dropped_relations, qualified
    from polymigrate.lint.source import prepare

    if migration.technology != "postgresql":
        return []
    out: list[str] = []
    for stmt in prepare(migration, placeholders).statements:
        n = stmt.node
        if isinstance(n, ast.DropStmt) and n.removeType == enums.ObjectType.OBJECT_INDEX:
            out += [qualified(r) for r in dropped_relations(n)]
    return list(dict.fromkeys(out))


_USAGE = """
SELECT s.schemaname, s.indexrelname, s.relname, s.idx_scan
FROM pg_stat_user_indexes s
WHERE (s.schemaname = %(schema)s AND s.indexrelname = ANY(%(bare)s))
   OR (s.schemaname || '.' || s.indexrelname) = ANY(%(qualified)s)"""

# pg_stat_statements lives in the schema it was created in: found through pg_extension, the identifier
# quoted by psycopg, never formatted from input
_EXT_SCHEMA = "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'"
_STATEMENTS = """
SELECT query, calls, mean_exec_time
FROM {view}
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query ~* %(pattern)s AND query !~* '^\\s*(create|alter|drop|comment|analyze|vacuum|reindex)\\s'
ORDER BY calls DESC LIMIT %(limit)s"""


def pg_baseline(conn: Any, schema: str, dropped: list[str]) -> dict[str, Any] | None:
    """For each index about to be dropped that exists now: its table, scans and the statements on
    that table (``pg_stat_statements``, when installed); None when there is nothing to record."""
    from psycopg import sql

    bare = [d for d in dropped if "." not in d]
    qualified = [d for d in dropped if "." in d]
    rows = conn.execute(_USAGE, {"schema": schema, "bare": bare, "qualified": qualified}).fetchall()
    if not rows:
        return None
    ext = conn.execute(_EXT_SCHEMA).fetchone()
    out: dict[str, Any] = {}
    for sch, index, table, scans in rows:
        statements: list[dict[str, Any]] | None = None
        if ext is not None:
            view = sql.Identifier(ext[0], "pg_stat_statements")
            pattern = rf"\m{re.escape(table)}\M"  # the table as a whole word: orders, not orders_archive
            try:
                with conn.transaction():  # a savepoint: the view refuses when the library is not preloaded
                    found = conn.execute(sql.SQL(_STATEMENTS).format(view=view),
                                         {"pattern": pattern, "limit": STATEMENTS_SHOWN}).fetchall()
                statements = [{"query": " ".join(q.split())[:300], "calls": int(c), "mean_ms": round(float(m), 3)}
                              for q, c, m in found]
            except Exception:  # noqa: BLE001  installed but not loaded (shared_preload_libraries): unknown
                statements = None
        out[f"{sch}.{index}" if sch != schema else index] = {"table": f"{sch}.{table}" if sch != schema else table,
                                                             "scans": int(scans or 0), "statements": statements}
    return {"dropped_indexes": out}


def checks(baselines: list[dict[str, Any]], *, min_scans: int, technology: str = "postgresql") -> list[Check]:
    """The verify checks of this run's baselines (``impact_baseline`` details, oldest first): one
    failed check per dropped index the workload used ``min_scans`` times or more, one passing check
    when the run dropped indexes nobody used."""
    used: dict[str, dict[str, Any]] = {}
    unused: list[str] = []
    for b in baselines:
        for index, info in (b.get("dropped_indexes") or {}).items():
            if int(info.get("scans") or 0) >= min_scans:
                used.setdefault(index, info)
            else:
                unused.append(index)
    out = []
    for index, info in used.items():
        statements = info.get("statements")
        said = ("; statements on " + info["table"] + ": " + " | ".join(
            f"{s['query']} ({s['calls']} calls, mean {s['mean_ms']} ms)" for s in statements)
            if statements else "; statements unknown (install pg_stat_statements in this database to see them)"
            if statements is None else f"; pg_stat_statements has no statement on {info['table']}")
        out.append(Check(CHECK, False, technology=technology, detail=(
            f"index {index} on {info['table']} was used {info['scans']} time(s) before this run dropped it"
            f"{said}. Queries that used it now scan another way: create it again in a new migration "
            f"(CREATE INDEX CONCURRENTLY), or set policy.dropped_index_min_scans above {info['scans']} "
            "if this is expected")))
    if unused and not used:
        out.append(Check(CHECK, True, technology=technology,
                         detail=f"dropped {', '.join(sorted(set(unused)))}: used fewer than {min_scans} time(s)"))
    return out


_DROP_INDEX = re.compile(r"\bdrop\s+index\b", re.I)


def before(adapter: Any, migrations: list[Migration], placeholders: dict[str, str] | None = None,
           log: Any = None) -> dict[str, Any] | None:
    """The evidence to record before ``adapter``'s pending files run (``impact_baseline``), or None.
    Only files whose text says DROP INDEX are parsed, and only a target whose adapter reads index
    statistics (``index_baseline``: PostgreSQL) is asked; anything that fails is logged, never raised."""
    reader = getattr(adapter, "index_baseline", None)
    candidates = [m for m in migrations if _DROP_INDEX.search(m.text)]
    if reader is None or not candidates:
        return None
    try:
        applied = {e.script for e in adapter.read_ledger() if e.success}
        dropped = [d for m in candidates if m.script not in applied for d in dropped_indexes(m, placeholders)]
        return reader(dropped) if dropped else None
    except Exception as exc:  # noqa: BLE001  evidence for verify, never a reason to stop a migration
        if log is not None:
            log.warning("index statistics not read before the run (verify will not check dropped indexes): %s", exc)
        return None
