"""One migration file prepared for the rules: text, line mapping and, per technology, its parse.

PostgreSQL files are split by pglast into statements carrying their first and last line; JSON
files are parsed once; every rule reads this instead of re-parsing. What rules ask about a whole
file (which tables and indexes it created before a statement, where a lock_timeout is set, the
column types it knows) is computed once per file, so lint time grows with the number of
statements, not with its square.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums, parse_sql
from pglast.parser import ParseError

from polymigrate.adapters.postgresql import statements as pg_statements
from polymigrate.catalog import Migration

_PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Za-z_][\w.:-]*)\}")
PLACEHOLDER_FILL = "pm_placeholder"  # stands for a ${name} without a value, so the SQL still parses
_AT = enums.AlterTableType


@dataclass
class Statement:
    """One SQL statement: its parse tree, its text and where it sits in the file."""

    node: Any
    text: str
    line: int
    end_line: int
    index: int

    @property
    def kind(self) -> str:
        return type(self.node).__name__

    @property
    def short(self) -> str:
        flat = " ".join(self.text.split())
        return flat if len(flat) <= 160 else flat[:157] + "..."


@dataclass
class Facts:
    """One pass over a PostgreSQL file, in statement order (see ``facts``)."""

    created_tables: dict[str, int] = field(default_factory=dict)   # relname -> index of the creating statement
    created_indexes: dict[str, int] = field(default_factory=dict)  # index name -> index of the creating statement
    lock_timeout_at: int | None = None                            # first SET lock_timeout
    # (statement index, table, column) -> (type, typmods) the column had just before an ALTER … TYPE,
    # when this change set defines it (an earlier file, or earlier in this one)
    type_before: dict[tuple[int, str, str], tuple[str, tuple[int, ...]]] = field(default_factory=dict)


@dataclass
class Source:
    """What the rules see of one migration."""

    migration: Migration
    text: str
    statements: list[Statement] = field(default_factory=list)
    parse_error: tuple[str, int] | None = None  # (message, line)
    data: Any = None                             # parsed JSON, for .json files
    state: dict = field(default_factory=dict)    # shared across one catalog's files (e.g. ES aliases)
    facts: Facts = field(default_factory=Facts)
    _newlines: list[int] | None = field(default=None, repr=False)
    _executed: list | None = field(default=None, repr=False)

    @property
    def file(self) -> str:
        return str(self.migration.path)

    @property
    def technology(self) -> str:
        return self.migration.technology

    @property
    def suffix(self) -> str:
        return self.migration.path.suffix.lower()

    def line_of(self, offset: int) -> int:
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        return bisect.bisect_left(self._newlines, offset) + 1

    @property
    def executed(self) -> list[pg_statements.Statement]:
        """The file as the PostgreSQL adapter splits it (how each statement runs), [] when it does not parse."""
        if self._executed is None:
            try:
                self._executed = pg_statements.split(self.text, file=self.file)
            except Exception:  # noqa: BLE001  sql-syntax-error reports it
                self._executed = []
        return self._executed

    @property
    def in_transaction(self) -> bool:
        """Whether the executor runs this file as ONE transaction: the adapter's own decision
        (the header directive, statements PostgreSQL refuses in a transaction, the file's COMMITs)."""
        if self.parse_error:
            return True
        return not pg_statements.needs_autocommit(self.executed, self.migration.directives.transactional)

    def lock_timeout_before(self, stmt: Statement) -> bool:
        """A lock_timeout is in force for ``stmt``: header directive or an earlier SET."""
        if self.migration.directives.lock_timeout:
            return True
        return self.facts.lock_timeout_at is not None and self.facts.lock_timeout_at < stmt.index


def fill_placeholders(text: str, placeholders: dict[str, str] | None) -> str:
    """``${name}`` replaced by its value, or by a same-line identifier so the SQL still parses."""
    values = placeholders or {}
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group("name"), PLACEHOLDER_FILL)), text)


def prepare(migration: Migration, placeholders: dict[str, str] | None = None,
            state: dict | None = None) -> Source:
    """Parse a migration once for every rule (files of one catalog in the order they apply, sharing ``state``)."""
    src = Source(migration, fill_placeholders(migration.text, placeholders), state=state if state is not None else {})
    if migration.technology == "postgresql":
        _split_sql(src)
        _collect_facts(src)
    elif src.suffix == ".json":
        try:
            src.data = json.loads(src.text)
        except json.JSONDecodeError:
            pass  # the catalog reports malformed JSON (spec.formats); rules then see no data
    return src


def _split_sql(src: Source) -> None:
    try:
        raw = parse_sql(src.text)
    except ParseError as exc:
        offset = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        src.parse_error = (str(exc.args[0]), src.line_of(offset))
        return
    for i, r in enumerate(raw):
        start = r.stmt_location or 0
        end = start + r.stmt_len if r.stmt_len else len(src.text)
        body = src.text[start:end]
        # pglast starts a statement after the previous ';': skip blanks and comments to its first token
        lead = _leading_noise(body)
        start += lead
        body = body[lead:].rstrip().rstrip(";")
        src.statements.append(Statement(r.stmt, body, src.line_of(start), src.line_of(start + len(body)), i))


def type_of(type_name) -> tuple[str, tuple[int, ...]]:
    """(last name part, integer modifiers) of a pglast TypeName: ``varchar(40)`` → ("varchar", (40,))."""
    if type_name is None or not type_name.names:
        return "", ()
    mods = tuple(m.val.ival for m in (type_name.typmods or ()) if isinstance(getattr(m, "val", None), ast.Integer))
    return type_name.names[-1].sval.lower(), mods


def _collect_facts(src: Source) -> None:
    """Fill ``src.facts`` in one pass, and carry what later files need in ``src.state``: the tables
    and column types the change set creates (``created_tables``, ``columns``)."""
    facts = src.facts
    columns: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = src.state.setdefault("columns", {})
    catalog_tables: set[str] = src.state.setdefault("created_tables", set())
    for s in src.statements:
        n = s.node
        created = None
        if isinstance(n, ast.CreateStmt) and n.relation is not None:
            created = n.relation.relname
            columns[created] = {c.colname: type_of(c.typeName) for c in n.tableElts or ()
                                if isinstance(c, ast.ColumnDef)}
        elif isinstance(n, ast.CreateTableAsStmt) and n.into is not None and n.into.rel is not None:
            created = n.into.rel.relname  # CREATE TABLE … AS, CREATE MATERIALIZED VIEW
        elif isinstance(n, ast.SelectStmt) and n.intoClause is not None and n.intoClause.rel is not None:
            created = n.intoClause.rel.relname  # SELECT … INTO t
        elif isinstance(n, ast.IndexStmt) and n.idxname:
            facts.created_indexes.setdefault(n.idxname, s.index)
        elif isinstance(n, ast.VariableSetStmt) and (n.name or "").lower() == "lock_timeout" \
                and facts.lock_timeout_at is None:
            facts.lock_timeout_at = s.index
        elif isinstance(n, ast.AlterTableStmt) and n.relation is not None:
            table = columns.setdefault(n.relation.relname, {})
            for cmd in n.cmds or ():
                if not isinstance(cmd, ast.AlterTableCmd):
                    continue
                if cmd.subtype == _AT.AT_AlterColumnType and cmd.def_ is not None:
                    if cmd.name in table:
                        facts.type_before[(s.index, n.relation.relname, cmd.name)] = table[cmd.name]
                    table[cmd.name] = type_of(cmd.def_.typeName)
                elif cmd.subtype == _AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
                    table[cmd.def_.colname] = type_of(cmd.def_.typeName)
                elif cmd.subtype == _AT.AT_DropColumn:
                    table.pop(cmd.name, None)
        if created is not None:
            facts.created_tables.setdefault(created, s.index)
            catalog_tables.add(created)


_NOISE = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.S)


def _leading_noise(text: str) -> int:
    return _NOISE.match(text).end()
