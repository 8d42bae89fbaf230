"""Timeouts around blocking statements.

polymigrate's executor always sets the environment policy's ``lock_timeout`` (10s by default,
3s in production) before a PostgreSQL migration, so a missing timeout never leaves a migration
queueing forever behind a long transaction. The rules therefore only inform (severity ``info``):
a file that takes a heavy lock should state a timeout sized for its table, via the header
directive ``-- polymigrate: lock_timeout=…`` or ``SET lock_timeout``.
"""

from __future__ import annotations

from pglast import ast

from polymigrate.lint.locks import BLOCKS_WRITES, effects
from polymigrate.lint.pgast import is_new_table
from polymigrate.lint.rule import Hit, Rule


def _first_blocking(src):
    for s in src.statements:
        for e in effects(s):
            if e.lock in BLOCKS_WRITES and not (e.table is not None and is_new_table(src, s, e.table)):
                return s, e
    return None, None


def _lock(src):
    s, e = _first_blocking(src)
    if s is not None and not src.lock_timeout_before(s):
        yield Hit.at(s, f"takes {e.lock} without a lock_timeout of its own; the environment policy's "
                        "default lock_timeout applies")


def _statement(src):
    if src.migration.directives.statement_timeout:
        return
    s, e = _first_blocking(src)
    if s is None or e.work not in ("rewrite", "scan", "index"):
        return
    if any(isinstance(p.node, ast.VariableSetStmt) and (p.node.name or "").lower() == "statement_timeout"
           for p in src.statements[:s.index]):
        return
    yield Hit.at(s, f"{e.work} under {e.lock} without a statement_timeout; only the policy's applies, if any")


RULES = (
    Rule("require-lock-timeout", "postgresql", "info",
         "a write-blocking lock is taken with only the policy's default lock_timeout",
         "add '-- polymigrate: lock_timeout=2s' to the file header (or SET lock_timeout = '2s' first)",
         _lock, squawk=True),
    Rule("require-statement-timeout", "postgresql", "info",
         "a long scan/rewrite/index build under a blocking lock has no statement_timeout",
         "add '-- polymigrate: statement_timeout=5min' to the file header", _statement, squawk=True),
)
