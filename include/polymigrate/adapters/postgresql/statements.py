"""Split a PostgreSQL migration into statements with pglast and say how each must run.

PostgreSQL refuses some statements inside a transaction block (``CREATE INDEX CONCURRENTLY``,
``VACUUM``, ``ALTER SYSTEM``, ``CREATE DATABASE``, a ``DO`` block that commits …). Finding them with
the server's own grammar (pglast wraps libpg_query, and its PL/pgSQL parser for ``DO`` bodies)
rather than a regular expression means a ``CONCURRENTLY`` inside a comment, a string or a function
body never fools the executor.

A file may also put its own transaction boundaries (``COMMIT;`` mid-file, ``BEGIN; … COMMIT;``), as
files written for Flyway or psql do: ``steps`` turns them into the transactions the executor runs,
each committed together with the file's progress row.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pglast import parser

from polymigrate.errors import PermanentError

_TX_CONTROL = {"TRANS_STMT_BEGIN", "TRANS_STMT_START", "TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK",
               "TRANS_STMT_PREPARE", "TRANS_STMT_COMMIT_PREPARED", "TRANS_STMT_ROLLBACK_PREPARED"}
# Boundaries a file may put (Flyway and psql apply them). ROLLBACK and two-phase commit are refused:
# a file that throws away its own work, or leaves a prepared transaction behind, is never meant.
_HONOURED = {"BEGIN", "START", "COMMIT"}
_DO_COMMIT = re.compile(r"\b(commit|rollback)\b", re.IGNORECASE)
DO_COMMIT = "DO block with COMMIT or ROLLBACK"
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
    begin_options: tuple[tuple[str, object], ...] = ()  # BEGIN ISOLATION LEVEL …: (name, value) pairs
    session: bool = True  # may leave state in the session (``may_change_session``): reset after the file
    # pglast's JSON tree of the statement, kept so lineage reads the same parse (issue 24: one per file)
    fields: dict = field(default_factory=dict, repr=False, compare=False)

    def line_of(self, position: int | None) -> int:
        """The file line of a 1-based character position inside this statement (server error cursor)."""
        if not position:
            return self.line
        return self.line + self.text.count("\n", 0, max(position - 1, 0))


def _rangevar(rv: dict | None) -> tuple[str | None, str | None]:
    return (rv.get("schemaname"), rv.get("relname")) if rv else (None, None)


def _do_commits(f: dict, text: str) -> bool:
    """A PL/pgSQL ``DO`` body with COMMIT or ROLLBACK: PostgreSQL runs it only outside a transaction block."""
    language, body = "plpgsql", ""
    for arg in f.get("args") or ():
        d = arg.get("DefElem", {})
        value = (d.get("arg") or {}).get("String", {}).get("sval", "")
        if d.get("defname") == "language":
            language = value.lower()
        elif d.get("defname") == "as":
            body = value
    if language != "plpgsql" or not _DO_COMMIT.search(body):
        return False  # the word alone, e.g. in a comment, is settled by the parser below
    try:
        tree = parser.parse_plpgsql_json(text)
    except parser.ParseError:
        return False  # the server reports the syntax error, naming the line
    return '"PLpgSQL_stmt_commit"' in tree or '"PLpgSQL_stmt_rollback"' in tree


def _why_non_transactional(node: str, f: dict, server_version: int,
                           text: str = "") -> tuple[str | None, IndexTarget | None]:
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
    if node == "DoStmt" and _do_commits(f, text):
        return DO_COMMIT, None
    return _ALWAYS_OUTSIDE.get(node), None


# Statements that can leave nothing in the session when nothing below them runs code (issue 24: the
# reset after a file that cannot change its session is skipped). Everything else is assumed to:
# SET/RESET, ROLE, temporary objects, LISTEN, PREPARE, DECLARE, DISCARD, LOAD, DO, CALL, and DML or
# queries, whose triggers and defaults (nextval sets currval) run code the parse tree does not show.
_INERT = frozenset({"CreateStmt", "IndexStmt", "CommentStmt", "DropStmt", "CreateSchemaStmt", "AlterTableStmt",
                    "RenameStmt", "GrantStmt", "ViewStmt", "CreateSeqStmt", "AlterSeqStmt", "CreateEnumStmt",
                    "AlterEnumStmt", "CompositeTypeStmt", "CreateDomainStmt", "AlterDomainStmt",
                    "CreateFunctionStmt", "CreateTrigStmt", "AlterOwnerStmt", "AlterObjectSchemaStmt",
                    "CreatePolicyStmt", "AlterPolicyStmt", "AlterDefaultPrivilegesStmt"})
# …unless the statement calls a function (a default, a CHECK, an index expression evaluated on existing
# rows), makes a temporary object, or fills a new column from a sequence (serial, identity).
_RUNS_CODE = re.compile(r'"(FuncCall|VariableSetStmt|SubLink|CONSTR_IDENTITY|CONSTR_GENERATED)"'
                        r'|"relpersistence":"t"|"sval":"(small|big)?serial[248]?"')


def may_change_session(node: str, f: dict) -> bool:
    """Whether a statement (pglast's JSON tree) may change its session's state: conservative."""
    return node not in _INERT or bool(_RUNS_CODE.search(json.dumps(f, separators=(",", ":"))))


def _begin_options(f: dict) -> tuple[tuple[str, object], ...]:
    out = []
    for o in f.get("options") or ():
        d = o.get("DefElem", {})
        const = (d.get("arg") or {}).get("A_Const", {})
        value = const.get("sval", {}).get("sval") if "sval" in const else bool(const.get("ival", {}).get("ival"))
        out.append((d.get("defname", ""), value))
    return tuple(out)


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
    newlines = [m.start() for m in re.finditer(b"\n", raw)]  # lines by bisection: linear in the file's size
    out: list[Statement] = []
    for item in tree.get("stmts", []):
        start = item.get("stmt_location", 0)
        length = item.get("stmt_len", 0)
        chunk = raw[start:start + length] if length else raw[start:]
        text = chunk.decode("utf-8")
        start += len(chunk) - len(chunk.lstrip())
        (node, fields), = item["stmt"].items()
        why, target = _why_non_transactional(node, fields, server_version, text)
        control, options = None, ()
        if node == "TransactionStmt" and fields.get("kind") in _TX_CONTROL:
            control = fields["kind"].removeprefix("TRANS_STMT_").replace("_", " ")
            options = _begin_options(fields)
        out.append(Statement(len(out), text.strip(), bisect.bisect_left(newlines, start) + 1, start, node, why,
                             control, target, options, may_change_session(node, fields), fields))
    return out


def check_transaction_control(statements: list[Statement], file: str | Path, transactional: bool | None = None) -> None:
    """Refuse what no transaction plan can honour: ROLLBACK, two-phase commit, and any boundary in a
    file whose header promises one transaction (``transactional=true``)."""
    for s in statements:
        if not s.transaction_control:
            continue
        if s.transaction_control not in _HONOURED:
            raise PermanentError(
                f"explicit {s.transaction_control} is not allowed in a migration", file=file, line=s.line,
                statement=s.text,
                hint="remove it: a migration that throws its own work away (or leaves a prepared transaction "
                     "behind) cannot be recorded; use SAVEPOINT / ROLLBACK TO SAVEPOINT inside a transaction")
        if transactional:
            raise PermanentError(
                f"explicit {s.transaction_control} in a file whose header says transactional=true", file=file,
                line=s.line, statement=s.text,
                hint="remove the BEGIN/COMMIT (the file already runs in one transaction with its ledger row), "
                     "or remove the header to keep the file's own transaction boundaries")


def needs_autocommit(statements: list[Statement], transactional: bool | None) -> bool:
    """True when the file cannot run as ONE transaction with its ledger row.

    ``transactional`` is the file's header directive: it overrides detection either way, so a file
    marked ``transactional=true`` that holds e.g. ``VACUUM`` fails on the server with a clear error.
    A file with its own COMMIT runs in the transactions it names (``steps``).
    """
    if transactional is not None:
        return not transactional
    return any(s.non_transactional or s.transaction_control for s in statements)


@dataclass
class Step:
    """Statements the executor commits together (``transaction``), or one that runs outside any."""

    statements: list[Statement] = field(default_factory=list)
    transaction: bool = True
    begin_options: tuple[tuple[str, object], ...] = ()

    @property
    def end(self) -> int:
        """The file's ``statements_done`` once this step has committed."""
        return self.statements[-1].index + 1


def steps(statements: list[Statement], transactional: bool | None) -> list[Step]:
    """How a file that is not ONE transaction runs: the transactions it commits, in order.

    * A statement that cannot run in a transaction is a step of its own.
    * ``BEGIN`` … ``COMMIT`` is one step, as in psql; ``BEGIN``'s options (isolation level, read
      only, deferrable) apply to it. The control statements themselves belong to the step.
    * Other statements: with ``transactional=false`` each is a step of its own; otherwise the
      statements between two boundaries form one step, as Flyway commits them.

    Each step is committed with the file's progress row, so a retry resumes after the last
    committed step, and no statement of a committed step runs twice.
    """
    out: list[Step] = []
    current: Step | None = None
    in_block = False

    def close() -> None:
        nonlocal current
        if current is not None and current.statements:
            out.append(current)
        current = None

    for s in statements:
        control = s.transaction_control
        if control in ("BEGIN", "START"):
            if not in_block:
                close()
                current = Step(begin_options=s.begin_options)
                in_block = True
            current.statements.append(s)  # type: ignore[union-attr]  # a nested BEGIN only warns, as in psql
            continue
        if control == "COMMIT":
            if current is None:
                current = Step()
            current.statements.append(s)
            close()
            in_block = False
            continue
        if s.non_transactional and not in_block:
            close()
            out.append(Step([s], transaction=False))
            continue
        if current is None:
            current = Step()
        current.statements.append(s)
        if transactional is False and not in_block:
            close()
    close()
    return out
