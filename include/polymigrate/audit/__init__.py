"""Audit trail: the append-only, hash-chained store, the sink every stage writes through, reports.

``open_sink`` is the one way in for the executor, the CLI and the Airflow operators: it returns a
store-backed sink, or a ``NullSink`` only where no audit store is required (development, testing).
"""

from __future__ import annotations

from polymigrate.audit.links import run_url
from polymigrate.audit.chain import VerifyResult, canonical_json, chain_hash
from polymigrate.audit.store import AuditRecord, Conninfo, PostgresAuditStore, SchemaResult
from polymigrate.connections import AUDIT_CONN_ID, env_var
from polymigrate.errors import PermanentError
from polymigrate.events import EventSink, NullSink

_HOW_TO_CONFIGURE = (
    f"create the Airflow connection '{AUDIT_CONN_ID}' (type postgres) pointing at the audit database, "
    f"e.g. {env_var(AUDIT_CONN_ID)}=postgresql://polymigrate_audit@audit-db:5432/audit in the environment of "
    f"the Airflow components or the CLI, then run 'polymigrate audit init' once as the schema owner"
)


def open_sink(conninfo: Conninfo | None, *, required: bool) -> EventSink:
    """The audit sink for a run, checked before anything touches a target.

    Without ``conninfo``: a ``NullSink`` when not ``required``, otherwise ``PermanentError``.
    With ``conninfo``: the store, after proving it is reachable and its schema exists (created if
    missing and the user may); any failure is a ``PermanentError`` naming the connection id, whether
    required or not, because a configured store that silently drops events is worse than none.
    """
    if not conninfo:
        if required:
            raise PermanentError(
                f"no audit store configured: this environment requires every step to be recorded in the "
                f"audit store (connection '{AUDIT_CONN_ID}'), and nothing was run", hint=_HOW_TO_CONFIGURE)
        return NullSink()
    store = PostgresAuditStore(conninfo)
    try:
        if not store.schema_exists():
            store.ensure_schema()
    except Exception as exc:  # psycopg errors, DNS failures, refused connections, missing privileges
        store.close()
        raise PermanentError(
            f"audit store (connection '{AUDIT_CONN_ID}', {store.target}) is unreachable or not initialised, "
            f"so nothing was run: {exc}".strip(), hint=_HOW_TO_CONFIGURE) from exc
    return store


__all__ = ["AUDIT_CONN_ID", "AuditRecord", "PostgresAuditStore", "SchemaResult", "VerifyResult",
           "canonical_json", "chain_hash", "open_sink", "run_url"]
