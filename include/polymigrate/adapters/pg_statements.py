"""Split a PostgreSQL migration into statements with pglast and say how each must run.

PostgreSQL refuses some statements inside a transaction block (``CREATE INDEX CONCURRENTLY``,
``VACUUM``, ``ALTER SYSTEM``, ``CREATE DATABASE`` …). Finding them with the server's own grammar
(pglast wraps libpg_query) rather than a regular expression means a ``CONCURRENTLY`` inside a
comment, a string or a function body never fools the executor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pglast import parser

from polymigrate.errors import PermanentError

# Statements that end the file's transaction: each file runs in exactly one transaction (or none),
# so letting a file commit half of itself would break "the change and its ledger row together".
_TX_CONTROL = {"TRANS_STMT_BEGIN", "TRANS_STMT_START", "TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK",
               "TRANS_STMT_PREPARE", "TRANS_STMT_COMMIT_PREPARED", "TRANS_STMT_ROLLBACK_PREPARED"}
_ALWAYS_OUTSIDE = {"AlterSystemStmt": "ALTER SYSTEM", "CreatedbStmt": "CREATE DATABASE", "DropdbStmt": "DROP DATABASE",
                   "CreateTableSpaceStmt": "CREATE TABLESPACE", "DropTableSpaceStmt": "DROP TABLESPACE",
                   "CreateSubscriptionStmt": "CREATE SUBSCRIPTION", "DropSubscriptionStmt": "DROP SUBSCRIPTION"}


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
    offset: int  # byte offset (UTF-8) of its first character in the file
    node: str  # pglast node name, e.g. IndexStmt
    non_transactional: str | None = None  # why it cannot run in a transaction block, or None
    transaction_control: str | None = None  # BEGIN/COMMIT/… found in the file, or None
    index_target: IndexTarget | None = None

    def line_of(self, position: int | None) -> int:
        """The file line of a 1-based character position inside this statement (server error cursor)."""
        if not position:
            return self.line
        return self.line + self.text.count("\n", 0, max(position - 1, 0))


def _rangevar(rv: dict | None) -> tuple[str | None, str | None]:
    return (rv.get("schemaname"), rv.get("relname")) if rv else (None, None)


def _why_non_transactional(node: str, f: dict, server_version: int) -> tuple[str | None, IndexTarget | None]:
    """Why a statement (pglast's JSON parse tree: node name and fields) cannot run in a transaction."""
    if node == "IndexStmt" and f.get("concurrent"):
        schema, table = _rangevar(f.get("relation"))
        return "CREATE INDEX CONCURRENTLY", IndexTarget("create", f.get("idxname"), schema, table)
    if node == "DropStmt" and f.get("concurrent"):
        target = None
        objects = f.get("objects") or []
        if f.get("removeType") == "OBJECT_INDEX" and len(objects) == 1:
            parts = [item["String"]["sval"] for item in objects[0]["List"]["items"]]
            target = IndexTarget("drop", parts[-1], parts[-2] if len(parts) > 1 else None)
        return "DROP INDEX CONCURRENTLY", target
    if node == "ReindexStmt" and any(p["DefElem"]["defname"] == "concurrently" for p in f.get("params") or ()):
        schema, name = _rangevar(f.get("relation"))
        return "REINDEX CONCURRENTLY", IndexTarget("reindex", name or f.get("name"), schema)
    if node == "VacuumStmt" and f.get("is_vacuumcmd"):
        return "VACUUM", None
    if node == "AlterEnumStmt" and f.get("newVal") is not None and server_version < 120000:
        return "ALTER TYPE … ADD VALUE (PostgreSQL < 12)", None
    if node == "ClusterStmt" and not f.get("relation"):
        return "CLUSTER without a table", None
    return _ALWAYS_OUTSIDE.get(node), None


def split(body: str, *, file: str | Path = "<sql>", server_version: int = 150000) -> list[Statement]:
    """Every statement of ``body`` with its line and how it must run.

    Raises ``PermanentError`` naming the file and line when the SQL does not parse.
    """
    try:
        # the JSON tree costs a tenth of pglast's Python AST objects: it matters at 500 files a run
        tree = json.loads(parser.parse_sql_json(body))
    except parser.ParseError as exc:
        message, location = (exc.args + (None,))[:2]
        line = body.count("\n", 0, location) + 1 if isinstance(location, int) else None
        raise PermanentError(f"SQL does not parse: {message}", file=file, line=line,
                             hint="fix the syntax (polymigrate parses with PostgreSQL's own grammar, pglast)") from None
    raw = body.encode("utf-8")  # the parser's offsets count bytes
    out: list[Statement] = []
    for item in tree.get("stmts", []):
        start = item.get("stmt_location", 0)
        length = item.get("stmt_len", 0)
        chunk = raw[start:start + length] if length else raw[start:]
        text = chunk.decode("utf-8")
        start += len(chunk) - len(chunk.lstrip())
        (node, fields), = item["stmt"].items()
        why, target = _why_non_transactional(node, fields, server_version)
        control = None
        if node == "TransactionStmt" and fields.get("kind") in _TX_CONTROL:
            control = fields["kind"].removeprefix("TRANS_STMT_").replace("_", " ")
        out.append(Statement(len(out), text.strip(), raw.count(b"\n", 0, start) + 1, start, node, why, control, target))
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
