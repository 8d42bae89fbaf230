"""Impact-aware risk: a statement's lock mode × the size of what it touches → time held → level.

Without a connection the level comes from the statement alone (a rewrite under ACCESS EXCLUSIVE is
high whatever the table). With a psycopg connection to the target, ``pg_class.reltuples``,
``relpages`` and ``pg_total_relation_size`` turn each lock into an estimated duration. The
throughputs below are deliberately conservative figures for a busy server: the point is to rank
statements and size approval, not to predict to the second.
"""

from __future__ import annotations

from dataclasses import dataclass

from polymigrate.lint.locks import BLOCKS_READS, BLOCKS_WRITES, Effect, effects
from polymigrate.lint.model import Impact, RISK_LEVELS
from polymigrate.lint.pgast import canon_type, is_new_table, qualified, type_change, widens
from polymigrate.lint.source import PLACEHOLDER_FILL, Source, Statement

MB = 1024 * 1024
# bytes per second each kind of work gets through
THROUGHPUT = {"rewrite": 60 * MB, "index": 80 * MB, "scan": 300 * MB, "rows": 50 * MB}
# (lock blocks reads, lock blocks writes, neither): seconds at which the level steps up to medium, high, critical
STEPS = {"reads": (0.5, 5, 60), "writes": (5, 60, 600), "none": (600, 3600, 86400)}
# without statistics: the level a kind of work earns by itself
ALONE = {("reads", "rewrite"): "high", ("reads", "index"): "medium", ("reads", "scan"): "medium",
         ("writes", "index"): "medium", ("writes", "scan"): "medium", ("none", "rows"): "low"}


@dataclass
class TableStats:
    rows: float
    pages: int
    heap_bytes: int
    total_bytes: int
    column_types: dict[str, tuple[str, int]]  # column -> (type name, typmod)


def _blocks(lock: str | None) -> str:
    return "reads" if lock in BLOCKS_READS else "writes" if lock in BLOCKS_WRITES else "none"


def level_for(lock: str | None, seconds: float) -> str:
    """Risk level of holding ``lock`` for ``seconds``."""
    medium, high, critical = STEPS[_blocks(lock)]
    return "critical" if seconds >= critical else "high" if seconds >= high else "medium" if seconds >= medium else "low"


class StatsReader:
    """Reads and caches catalog statistics of the target's tables through one psycopg connection."""

    def __init__(self, connection, schema: str | None = None):
        self.connection = connection
        self.schema = schema
        self._cache: dict[tuple, TableStats | None] = {}

    def get(self, schema: str | None, relname: str) -> TableStats | None:
        """Statistics of a table (or of the table an index belongs to); None when it does not exist."""
        if schema:
            candidates = [(schema, relname)]
        else:  # the domain's schema first, as the executor's search_path would resolve it
            candidates = ([(self.schema, relname)] if self.schema else []) + [(None, relname)]
        for key in candidates:
            if key not in self._cache:
                self._cache[key] = self._read(*key)
            if self._cache[key] is not None:
                return self._cache[key]
        return None

    def _read(self, schema: str | None, relname: str) -> TableStats | None:
        # quote_ident keeps mixed-case names intact; to_regclass returns NULL instead of raising
        name_sql = "quote_ident(%s) || '.' || quote_ident(%s)" if schema else "quote_ident(%s)"
        params = (schema, relname) if schema else (relname,)
        with self.connection.cursor() as cur:
            cur.execute(
                "SELECT c.oid, greatest(c.reltuples, 0), c.relpages, pg_relation_size(coalesce(i.indrelid, c.oid)), "
                "pg_total_relation_size(coalesce(i.indrelid, c.oid)) "
                "FROM pg_class c LEFT JOIN pg_index i ON i.indexrelid = c.oid "
                f"WHERE c.oid = to_regclass({name_sql})", params)
            row = cur.fetchone()
            if row is None:
                return None
            oid, rows, pages, heap, total = row
            cur.execute("SELECT attname, format_type(atttypid, NULL), atttypmod FROM pg_attribute "
                        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped", (oid,))
            cols = {a: (t, m) for a, t, m in cur.fetchall()}
        if pages == 0 and heap > 0:
            # never vacuumed or analyzed: reltuples is unknown, so guess rows from the heap size
            rows = heap / 100
        return TableStats(float(rows), int(pages), int(heap), int(total), cols)


def _typmods(name: str, atttypmod: int) -> tuple[int, ...]:
    """pg_attribute.atttypmod as the modifiers a migration writes: varchar(n) is n + 4, numeric(p, s)
    is (p << 16 | s) + 4, varbit(n) is n; -1 means none."""
    if atttypmod < 0:
        return ()
    if name == "numeric":
        t = atttypmod - 4
        return ((t >> 16) & 0xFFFF, t & 0xFFFF)
    if name in ("varchar", "bpchar"):
        return (atttypmod - 4,)
    return (atttypmod,)


def _binary_coercible(effect: Effect, stats: TableStats | None) -> bool:
    """The live column widens to the new type (varchar → text or a wider varchar, numeric to more
    precision): only the catalog changes, no rewrite, no scan."""
    if stats is None or effect.column is None or effect.column not in stats.column_types or not effect.new_type:
        return False
    old_name, atttypmod = stats.column_types[effect.column]
    old = canon_type(old_name)[0]
    return widens((old, _typmods(old, atttypmod)), (effect.new_type, effect.new_mods))


def estimate(source: Source, stmt: Statement, stats: StatsReader | None) -> list[Impact]:
    """One Impact per relation the statement locks."""
    out = []
    for e in effects(stmt):
        table = qualified(e.table) if e.table is not None else None
        base = dict(file=source.file, line=stmt.line, statement=stmt.short, table=table, lock=e.lock, work=e.work)
        if e.lock is None or e.work == "none" or (e.table is not None and is_new_table(source, stmt, e.table)):
            out.append(Impact(**base, risk="low", seconds=0.0 if stats else None, note="new or untouched table"))
            continue
        if source.migration.directives.backfill and e.work == "rows":
            # docs/postgresql.md#backfills: rows are locked one short batch at a time, never the whole table
            out.append(Impact(**base, risk="low", seconds=0.0 if stats else None,
                              note="backfill: keyset batches of ~50 ms, each its own transaction"))
            continue
        verdict = type_change(source, stmt, e.table.relname, e.column, (e.new_type, e.new_mods)) \
            if e.column and e.new_type and e.table is not None else None
        if verdict == "metadata":
            base["work"] = "metadata"
            out.append(Impact(**base, risk="low", seconds=0.0 if stats else None,
                              note="widens a column this change set defined: catalog only"))
            continue
        if stats is None:
            level = ALONE.get((_blocks(e.lock), e.work), "low")
            if e.work == "rows" and e.whole_table:
                level = "medium"
            if verdict == "maybe":
                level = "medium"  # a widening changes only the catalog; without the target, nobody knows
            out.append(Impact(**base, risk=level, note="from the statement alone (no connection)"))
            continue
        st = stats.get(e.table.schemaname, e.table.relname) if e.table is not None else None
        if st is None and e.table is not None and e.table.relname in source.state.get("created_tables", ()):
            out.append(Impact(**base, risk="low", seconds=0.0, note="created by this change set, not on the target yet"))
            continue
        if st is None:
            # fail closed: a table lint cannot size may be the largest one; never call it low
            why = (f"a ${{placeholder}} has no value (pass -e ENV or -p name=value)" if PLACEHOLDER_FILL in (table or "")
                   else "wrong name or schema, or created outside this change set?")
            out.append(Impact(**base, risk="unknown", note=f"not found on the target, size unknown: {why}"))
            continue
        work = "metadata" if e.work == "rewrite" and _binary_coercible(e, st) else e.work
        if work in THROUGHPUT:
            size = st.total_bytes if work == "rewrite" else st.heap_bytes
            seconds = size / THROUGHPUT[work]
            if work == "rows" and not e.whole_table:
                seconds *= 0.1  # a filtered update: assume a tenth of the table
        else:
            seconds = 0.0
        base["work"] = work
        out.append(Impact(**base, rows=st.rows, bytes=st.total_bytes, seconds=round(seconds, 3),
                          risk=level_for(e.lock, seconds),
                          note=f"~{st.rows:,.0f} rows, {st.total_bytes / MB:,.1f} MB; {e.lock} held ~{seconds:,.1f}s"))
    return out


def statement_risk(impacts: list[Impact]) -> str:
    return max((i.risk for i in impacts), key=RISK_LEVELS.index, default="low")
