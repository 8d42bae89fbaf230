"""Files that cannot be re-run after failing half way, and files that do not parse."""

from __future__ import annotations

from pglast import ast

from polymigrate.lint.pgast import AT, alter_cmds
from polymigrate.lint.rule import Hit, Rule


def _fragile(src):
    # a transactional file rolls back entirely on failure: re-running it is always safe
    if src.in_transaction:
        return
    for s in src.statements:
        n = s.node
        if isinstance(n, (ast.CreateStmt, ast.IndexStmt)) and not n.if_not_exists:
            yield Hit.at(s, "outside a transaction: a retry after a partial failure hits 'already exists'",
                         fix="add IF NOT EXISTS")
        elif isinstance(n, ast.DropStmt) and not n.missing_ok:
            yield Hit.at(s, "outside a transaction: a retry after a partial failure hits 'does not exist'",
                         fix="add IF EXISTS")
    for s, _alter, cmd in alter_cmds(src):
        if cmd.subtype in (AT.AT_AddColumn, AT.AT_DropColumn) and not cmd.missing_ok:
            yield Hit.at(s, "outside a transaction: this ALTER fails when re-run", fix="add IF [NOT] EXISTS")


def _syntax(src):
    if src.parse_error:
        message, line = src.parse_error
        yield Hit(line, "", f"PostgreSQL cannot parse this file: {message}")


RULES = (
    Rule("prefer-robust-stmts", "postgresql", "low",
         "a non-transactional file must be safe to re-run after a partial failure",
         "IF NOT EXISTS / IF EXISTS on every CREATE, DROP and ADD/DROP COLUMN", _fragile, squawk=True),
    Rule("sql-syntax-error", "postgresql", "critical", "the file is not valid PostgreSQL",
         "fix the SQL at the reported line (psql -f file.sql against a scratch database shows the same error)", _syntax),
)
