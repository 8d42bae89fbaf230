"""Turn psycopg errors into polymigrate's two families by SQLSTATE.

Transient: what the same run may pass on retry (a lock held by someone else, a serialization
failure, a deadlock victim, a lost or refused connection). Everything else is permanent, and the
message names the file, the statement and its line so nobody has to bisect a migration.
"""

from __future__ import annotations

import psycopg

from polymigrate.adapters.pg_statements import Statement
from polymigrate.errors import PermanentError, TransientError

TRANSIENT_SQLSTATES = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "55P03": "lock not available (lock_timeout)",
    "57P01": "server shutting down",
    "57P02": "server crashed",
    "57P03": "server not accepting connections yet",
    "53300": "too many connections",
}

_HINTS = {
    "25001": "this statement cannot run inside a transaction: add the header "
             "`-- polymigrate: transactional=false` (or move it to its own file)",
    "55P04": "a new enum value cannot be used in the transaction that added it: move ALTER TYPE … ADD VALUE "
             "to its own earlier file",
    "42P07": "the object already exists: was it created by hand? make the statement idempotent "
             "(IF NOT EXISTS) or baseline past this version",
}


def is_transient(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None)
    if state is None:
        # no SQLSTATE: the connection itself failed (closed, reset, refused)
        return isinstance(exc, psycopg.OperationalError)
    return state in TRANSIENT_SQLSTATES or state.startswith("08")


def classify(exc: psycopg.Error, *, file: str, statement: Statement | None = None,
             what: str | None = None) -> PermanentError:
    """The polymigrate error to raise for ``exc`` while running ``statement`` of ``file``."""
    state = getattr(exc, "sqlstate", None)
    diag = getattr(exc, "diag", None)
    position = None
    if diag is not None and diag.statement_position:
        try:
            position = int(diag.statement_position)
        except ValueError:
            position = None
    line = statement.line_of(position) if statement else None
    primary = (diag.message_primary if diag is not None and diag.message_primary else str(exc).strip()) or type(exc).__name__
    lead = what or (f"statement {statement.index + 1} failed" if statement else "failed")
    message = f"{lead}: {primary}" + (f" [SQLSTATE {state}]" if state else "")
    kw = dict(file=file, statement=statement.text if statement else None, line=line)
    if is_transient(exc):
        reason = TRANSIENT_SQLSTATES.get(state or "", "connection problem")
        return TransientError(f"{message} ({reason}; safe to retry: nothing of this file was recorded as done)",
                              hint="retry; if it keeps happening, find the blocking session in pg_stat_activity", **kw)
    hint = _HINTS.get(state or "")
    if state == "57014" and "statement timeout" in primary:
        hint = "raise statement_timeout for this file (`-- polymigrate: statement_timeout=30min`) or make it faster"
    if diag is not None and diag.message_hint and not hint:
        hint = diag.message_hint
    return PermanentError(message, hint=hint or "fix the statement, then run migrate again", **kw)
