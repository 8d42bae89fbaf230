"""Index builds and drops: write-blocking locks and CONCURRENTLY inside a transaction."""

from __future__ import annotations

from pglast import ast, enums

from polymigrate.lint.pgast import dropped_relations, is_new_index, is_new_table, qualified
from polymigrate.lint.rule import Hit, Rule


def _create(src):
    for s in src.statements:
        n = s.node
        if isinstance(n, ast.IndexStmt) and not n.concurrent and not is_new_table(src, s, n.relation):
            yield Hit.at(s, f"CREATE INDEX on {qualified(n.relation)} takes a SHARE lock: writes wait for the whole build")


def _drop(src):
    for s in src.statements:
        n = s.node
        if isinstance(n, ast.DropStmt) and n.removeType == enums.ObjectType.OBJECT_INDEX and not n.concurrent \
                and not all(is_new_index(src, s, r.relname) for r in dropped_relations(n)):
            yield Hit.at(s, "DROP INDEX takes an ACCESS EXCLUSIVE lock on the table: reads and writes wait")


def _in_tx(src):
    explicit = False
    for s in src.statements:
        n = s.node
        if isinstance(n, ast.TransactionStmt):
            explicit = n.kind in (enums.TransactionStmtKind.TRANS_STMT_BEGIN, enums.TransactionStmtKind.TRANS_STMT_START)
            continue
        concurrent = (isinstance(n, ast.IndexStmt) and n.concurrent) or (isinstance(n, ast.DropStmt) and n.concurrent)
        if concurrent and (explicit or src.migration.directives.transactional):
            why = "inside BEGIN … COMMIT" if explicit else "with the header directive transactional=true"
            yield Hit.at(s, f"CONCURRENTLY cannot run in a transaction block ({why}): the migration will fail")


RULES = (
    Rule("require-concurrent-index-creation", "postgresql", "medium",
         "CREATE INDEX without CONCURRENTLY blocks writes to an existing table for the whole build",
         "CREATE INDEX CONCURRENTLY IF NOT EXISTS … in its own file (polymigrate runs it outside a transaction)",
         _create, impact=True, squawk=True),
    Rule("require-concurrent-index-deletion", "postgresql", "medium",
         "DROP INDEX without CONCURRENTLY blocks reads and writes of the table",
         "DROP INDEX CONCURRENTLY IF EXISTS … in its own file", _drop, squawk=True),
    Rule("ban-concurrent-index-creation-in-transaction", "postgresql", "high",
         "CREATE/DROP INDEX CONCURRENTLY inside a transaction fails at run time",
         "remove BEGIN/COMMIT and the transactional=true directive; keep the CONCURRENTLY statement alone in its file",
         _in_tx, squawk=True),
)
