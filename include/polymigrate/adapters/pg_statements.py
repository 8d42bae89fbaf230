"""Split a PostgreSQL migration into statements with pglast and say how each must run.

PostgreSQL refuses some statements inside a transaction block (``CREATE INDEX CONCURRENTLY``,
``VACUUM``, ``ALTER SYSTEM``, ``CREATE DATABASE`` …). Finding them with the server's own grammar
(pglast wraps libpg_query) rather than a regular expression means a ``CONCURRENTLY`` inside a
comment, a string or a function body never fools the executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pglast import ast, parser
from pglast.enums import ObjectType, TransactionStmtKind

from polymigrate.errors import PermanentError

# Statements that end the file's transaction: each file runs in exactly one transaction (or none),
# so letting a file commit half of itself would break "the change and its ledger row together".
_TX_CONTROL = {
    TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START,
    TransactionStmtKind.TRANS_STMT_COMMIT, TransactionStmtKind.TRANS_STMT_ROLLBACK,
    TransactionStmtKind.TRANS_STMT_PREPARE, TransactionStmtKind.TRANS_STMT_COMMIT_PREPARED,
    TransactionStmtKind.TRANS_STMT_ROLLBACK_PREPARED,
}


@dataclass(frozen=True)
class IndexTarget:
    """The index a concurrent statement builds or drops, for repairing what a killed run left."""

    action: str  # create | drop | reindex
    name: str | None  # None for an unnamed CREATE INDEX (PostgreSQL picks the name)
    schema: str | None
    table: str | None = None  # for create: the indexed table


@dataclass(frozen=True)
class Statement:
    """One statement of a migration file."""

    index: int  # 0-based position in the file
    text: str
    line: int  # 1-based line of its first character in the file
    offset: int  # character offset of its first character in the file
    node: str  # pglast node name, e.g. IndexStmt
    non_transactional: str | None = None  # why it cannot run in a transaction block, or None
    transaction_control: str | None = None  # BEGIN/COMMIT/… found in the file, or None
    index_target: IndexTarget | None = None

    def line_of(self, position: int | None) -> int:
        """The file line of a 1-based character position inside this statement (server error cursor)."""
        if not position:
            return self.line
        return self.line + self.text.count("\n", 0, max(position - 1, 0))


def _name(node) -> str:
    return type(node).__name__


def _rangevar(rv) -> tuple[str | None, str | None]:
    return (rv.schemaname, rv.relname) if rv is not None else (None, None)


def _why_non_transactional(stmt, server_version: int) -> tuple[str | None, IndexTarget | None]:
    if isinstance(stmt, ast.IndexStmt) and stmt.concurrent:
        schema, table = _rangevar(stmt.relation)
        return "CREATE INDEX CONCURRENTLY", IndexTarget("create", stmt.idxname, schema, table)
    if isinstance(stmt, ast.DropStmt) and stmt.concurrent:
        target = None
        if stmt.removeType == ObjectType.OBJECT_INDEX and stmt.objects and len(stmt.objects) == 1:
            parts = [s.sval for s in stmt.objects[0]]
            target = IndexTarget("drop", parts[-1], parts[-2] if len(parts) > 1 else None)
        return "DROP INDEX CONCURRENTLY", target
    if isinstance(stmt, ast.ReindexStmt) and any(p.defname == "concurrently" for p in (stmt.params or ())):
        schema, name = _rangevar(stmt.relation)
        return "REINDEX CONCURRENTLY", IndexTarget("reindex", name or stmt.name, schema)
    if isinstance(stmt, ast.VacuumStmt) and stmt.is_vacuumcmd:
        return "VACUUM", None
    if isinstance(stmt, ast.AlterEnumStmt) and stmt.newVal is not None and server_version < 120000:
        return "ALTER TYPE … ADD VALUE (PostgreSQL < 12)", None
    for kind, why in ((ast.AlterSystemStmt, "ALTER SYSTEM"), (ast.CreatedbStmt, "CREATE DATABASE"),
                      (ast.DropdbStmt, "DROP DATABASE"), (ast.CreateTableSpaceStmt, "CREATE TABLESPACE"),
                      (ast.DropTableSpaceStmt, "DROP TABLESPACE")):
        if isinstance(stmt, kind):
            return why, None
    if isinstance(stmt, ast.CreateSubscriptionStmt):
        return "CREATE SUBSCRIPTION", None
    if isinstance(stmt, ast.DropSubscriptionStmt):
        return "DROP SUBSCRIPTION", None
    if isinstance(stmt, ast.ClusterStmt) and stmt.relation is None:
        return "CLUSTER without a table", None
    return None, None


def split(body: str, *, file: str | Path = "<sql>", server_version: int = 150000) -> list[Statement]:
    """Every statement of ``body`` with its line and how it must run.

    Raises ``PermanentError`` naming the file and line when the SQL does not parse.
    """
    try:
        raws = parser.parse_sql(body)
    except parser.ParseError as exc:
        message, location = (exc.args + (None,))[:2]
        line = body.count("\n", 0, location) + 1 if isinstance(location, int) else None
        raise PermanentError(f"SQL does not parse: {message}", file=file, line=line,
                             hint="fix the syntax (polymigrate parses with PostgreSQL's own grammar, pglast)") from None
    out: list[Statement] = []
    for raw in raws:
        start = raw.stmt_location or 0
        text = body[start:start + raw.stmt_len] if raw.stmt_len else body[start:]
        # stmt_location points at the first token after the previous ';', so skip leading blanks
        lead = len(text) - len(text.lstrip())
        start += lead
        text = text.strip()
        why, target = _why_non_transactional(raw.stmt, server_version)
        control = None
        if isinstance(raw.stmt, ast.TransactionStmt) and raw.stmt.kind in _TX_CONTROL:
            control = raw.stmt.kind.name.removeprefix("TRANS_STMT_").replace("_", " ")
        out.append(Statement(len(out), text, body.count("\n", 0, start) + 1, start, _name(raw.stmt),
                             why, control, target))
    return out


def check_transaction_control(statements: list[Statement], file: str | Path) -> None:
    """Refuse BEGIN/COMMIT/ROLLBACK in a file: polymigrate owns the file's transaction."""
    for s in statements:
        if s.transaction_control:
            raise PermanentError(
                f"explicit {s.transaction_control} is not allowed in a migration", file=file, line=s.line,
                statement=s.text,
                hint="remove it: each file already runs in one transaction with its ledger row; to run each "
                     "statement on its own, add the header `-- polymigrate: transactional=false`, or split the file")


def needs_autocommit(statements: list[Statement], transactional: bool | None) -> bool:
    """True when the file must run outside one transaction.

    ``transactional`` is the file's header directive: it overrides detection either way, so a file
    marked ``transactional=true`` that holds e.g. ``VACUUM`` fails on the server with a clear error.
    """
    if transactional is not None:
        return not transactional
    return any(s.non_transactional for s in statements)
