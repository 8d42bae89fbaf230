"""One migration file prepared for the rules: text, line mapping and, per technology, its parse.

PostgreSQL files are split by pglast into statements carrying their first and last line; JSON
files are parsed once; every rule reads this instead of re-parsing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pglast import parse_sql
from pglast.parser import ParseError

from polymigrate.catalog import Migration

_PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Za-z_][\w.:-]*)\}")
# Statements PostgreSQL refuses inside a transaction block: a file holding one runs outside a transaction.
_NO_TX = ("IndexStmt.concurrent", "ReindexStmt.concurrently", "VacuumStmt", "CreatedbStmt", "DropdbStmt",
          "AlterSystemStmt", "CreateTableSpaceStmt")


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
class Source:
    """What the rules see of one migration."""

    migration: Migration
    text: str
    statements: list[Statement] = field(default_factory=list)
    parse_error: tuple[str, int] | None = None  # (message, line)
    data: Any = None                             # parsed JSON, for .json files
    state: dict = field(default_factory=dict)    # shared across one catalog's files (e.g. ES aliases)

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
        return self.text.count("\n", 0, offset) + 1

    @property
    def in_transaction(self) -> bool:
        """Whether the executor runs this file in one transaction (the header directive wins)."""
        declared = self.migration.directives.transactional
        if declared is not None:
            return declared
        return not any(_needs_autocommit(s.node) for s in self.statements)

    def lock_timeout_before(self, stmt: Statement) -> bool:
        """A lock_timeout is in force for ``stmt``: header directive or an earlier SET."""
        if self.migration.directives.lock_timeout:
            return True
        return any(s.kind == "VariableSetStmt" and (s.node.name or "").lower() == "lock_timeout"
                   for s in self.statements[:stmt.index])


def _needs_autocommit(node) -> bool:
    kind = type(node).__name__
    for marker in _NO_TX:
        name, _, attr = marker.partition(".")
        if kind == name and (not attr or getattr(node, attr, False)):
            return True
    if kind == "DropStmt" and getattr(node, "concurrent", False):
        return True
    return False


def fill_placeholders(text: str, placeholders: dict[str, str] | None) -> str:
    """``${name}`` replaced by its value, or by a same-line identifier so the SQL still parses."""
    values = placeholders or {}
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group("name"), "pm_placeholder")), text)


def prepare(migration: Migration, placeholders: dict[str, str] | None = None,
            state: dict | None = None) -> Source:
    """Parse a migration once for every rule."""
    src = Source(migration, fill_placeholders(migration.text, placeholders), state=state if state is not None else {})
    if migration.technology == "postgresql":
        _split_sql(src)
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


_NOISE = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.S)


def _leading_noise(text: str) -> int:
    return _NOISE.match(text).end()
