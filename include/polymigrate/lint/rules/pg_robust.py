"""Files that cannot be re-run after failing half way, files that commit part of themselves, files
that do not parse, and tables the target does not have."""

from __future__ import annotations

from pglast import ast

from polymigrate.adapters.postgresql.statements import DO_COMMIT
from polymigrate.lint.pgast import AT, alter_cmds
from polymigrate.lint.rule import Hit, Rule


def _fragile(src):
    # a transactional file rolls back entirely on failure: re-running it is always safe; a file with
    # its own COMMITs resumes after its last committed part (explicit-transaction-control speaks for it)
    if src.in_transaction or any(s.transaction_control for s in src.executed):
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


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= 160 else flat[:157] + "..."


def _own_commits(src):
    for s in src.executed:
        if s.transaction_control in ("COMMIT", "BEGIN", "START"):
            what = "COMMIT" if s.transaction_control == "COMMIT" else "BEGIN"
            yield Hit(s.line, _short(s.text), f"{what}: the file sets its own transaction boundaries. polymigrate commits "
                      "each part with the file's progress and resumes after the last committed part, but between the "
                      "parts readers see the file half applied, and tools that re-run whole files (psql, Flyway after "
                      "a failure) repeat the committed part")


def _do_commits(src):
    for s in src.executed:
        if s.non_transactional == DO_COMMIT:
            yield Hit(s.line, _short(s.text), "this DO block commits inside itself, so it runs outside a transaction: "
                      "if it fails after a COMMIT, the committed batches stay and a retry re-runs the block from its "
                      "start")


def _target(src):
    """Produced by the engine from the target's statistics (lint --url)."""
    return ()


def _syntax(src):
    if src.parse_error:
        message, line = src.parse_error
        yield Hit(line, "", f"PostgreSQL cannot parse this file: {message}")


RULES = (
    Rule("prefer-robust-stmts", "postgresql", "low",
         "a non-transactional file must be safe to re-run after a partial failure",
         "IF NOT EXISTS / IF EXISTS on every CREATE, DROP and ADD/DROP COLUMN", _fragile, squawk=True),
    Rule("explicit-transaction-control", "postgresql", "medium",
         "the file commits part of itself (COMMIT, BEGIN … COMMIT): half applied between its parts",
         "one transaction per file: remove BEGIN/COMMIT, or split the file at the COMMIT (one version per part); "
         "in a file already shipped (its checksum must not change) suppress this with a reason", _own_commits),
    Rule("commit-inside-do-block", "postgresql", "medium",
         "a DO block with COMMIT runs outside a transaction and is re-run from its start after a failure",
         "make every batch skip what is already done (e.g. WHERE NOT migrated, or a key range read from a "
         "progress table) so re-running the block is harmless", _do_commits),
    Rule("table-not-found-on-target", "postgresql", "high",
         "lint --url cannot find a table the migration changes, so it cannot size the lock (risk: unknown)",
         "pass the environment's placeholders (-e ENV [-r REGION], or -p name=value), check the name and schema, "
         "or suppress with a reason if another change set creates it", _target),
    Rule("sql-syntax-error", "postgresql", "critical", "the file is not valid PostgreSQL",
         "fix the SQL at the reported line (psql -f file.sql against a scratch database shows the same error)", _syntax),
)
