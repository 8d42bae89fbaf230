"""Turn psycopg errors into polymigrate's two families by SQLSTATE.

Transient: what the same run may pass on retry (a lock held by someone else, a serialization
failure, a deadlock victim, a lost or refused connection, a session ended for being idle).
Everything else is permanent, and the message names the file, the statement and its line so
nobody has to bisect a migration.

A connection that cannot be opened carries no SQLSTATE (libpq reports it as text), so
``connect_error`` sorts it by what libpq says: a server that is down, starting, full or out of
reach may answer on retry; a database or role that does not exist, a refused password, an
invalid ``sslmode`` or port never will, and retrying them only hides the fix for an hour.
"""

from __future__ import annotations

import re

import psycopg

from polymigrate.adapters.postgresql.statements import Statement
from polymigrate.errors import PermanentError, TransientError

TRANSIENT_SQLSTATES = {
    "40001": "serialization failure",
    "40P01": "deadlock detected",
    "55P03": "lock not available (lock_timeout)",
    "57P01": "server shutting down",
    "57P02": "server crashed",
    "57P03": "server not accepting connections yet",
    "57P05": "session ended by idle_session_timeout",
    "53300": "too many connections",
}

# What libpq says when opening a connection fails for a reason that may pass: anything else
# (no such database or role, authentication, TLS, an invalid option) is permanent.
_TRANSIENT_CONNECT = re.compile(
    r"connection refused|timeout expired|timed out|could not receive data|server closed the connection"
    r"|connection reset|no route to host|network is unreachable|temporary failure in name resolution"
    r"|the database system is (starting up|shutting down|in recovery mode|not yet accepting connections)"
    r"|not yet accepting connections|consistent recovery state has not been yet reached"
    r"|too many (connections|clients)|remaining connection slots are reserved|terminating connection"
    r"|ssl syscall error|eof detected|broken pipe", re.IGNORECASE)

_CONNECT_HINTS = (
    (re.compile(r'database ".*" does not exist', re.I), "create the database, or fix the database name of the connection"),
    (re.compile(r'role ".*" does not exist|password authentication failed|no password supplied|'
                r'no pg_hba.conf entry|is not permitted to log in', re.I),
     "fix the user/password of the connection (or pg_hba.conf on the server)"),
    (re.compile(r"ssl|certificate", re.I), "fix sslmode / the certificates of the connection"),
    (re.compile(r"invalid|unrecognized", re.I), "fix the connection settings"),
    (re.compile(r"resolve host|name or service not known|nodename nor servname", re.I),
     "fix the host name of the connection"),
)

_HINTS = {
    "25001": "this statement cannot run inside a transaction: add the header "
             "`-- polymigrate: transactional=false` (or move it to its own file)",
    "55P04": "a new enum value cannot be used in the transaction that added it: move ALTER TYPE … ADD VALUE "
             "to its own earlier file",
    "2D000": "a procedure or DO block committed inside the file's transaction: add the header "
             "`-- polymigrate: transactional=false` so it runs outside one (a DO block with COMMIT is detected "
             "by itself), and make it safe to re-run from its start",
    "42P07": "the object already exists: was it created by hand? make the statement idempotent "
             "(IF NOT EXISTS) or baseline past this version",
}


def is_transient(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None)
    if state is None:
        # no SQLSTATE: the connection itself failed (closed, reset, refused)
        return isinstance(exc, psycopg.OperationalError)
    return state in TRANSIENT_SQLSTATES or state.startswith("08")


def connect_error(exc: psycopg.Error, target: str, secrets: tuple[str, ...] = ()) -> PermanentError:
    """The error to raise when a connection to ``target`` cannot be opened."""
    text = str(exc).strip()
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    message = f"cannot connect to {target}: {text}"
    if _TRANSIENT_CONNECT.search(text):
        return TransientError(message, hint="check the server is up and reachable; the task retries")
    hint = next((h for pattern, h in _CONNECT_HINTS if pattern.search(text)), "fix the connection settings")
    return PermanentError(message + " (retrying cannot help)", hint=hint)


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
