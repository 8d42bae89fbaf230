"""Audit events and the one sink interface every stage writes through.

The Airflow layer and the CLI both emit through an ``EventSink`` that ``polymigrate.audit.open_sink``
gives them: the PostgreSQL append-only, hash-chained store, or a ``NullSink`` where no store is
configured nor required.
"""

from __future__ import annotations

import getpass
import json
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

KINDS = (
    "triggered", "validated", "approval_requested", "approved", "rejected", "overridden", "refused",
    "planned", "migration_started", "migration_succeeded", "migration_failed",
    "task_retried", "task_failed", "verified", "verify_failed", "baselined", "repaired", "undone",
    "snapshot", "drift",
    "notification_failed",  # a notification (polymigrate.notify) that could not be delivered, and where to
    "impact_baseline",  # evidence read before a target's files ran, which verify checks (polymigrate.impact)
    "notified",  # a failure told to its routes (run_failed, rehearsal_failed, verify_failed) or its recovery
)


@dataclass
class AuditEvent:
    kind: str
    domain: str
    environment: str = "adhoc"
    region: str | None = None
    technology: str | None = None
    version: str | None = None
    script: str | None = None
    checksum: int | None = None
    actor: str = ""
    run_id: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None
    duration_ms: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown audit event kind {self.kind!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["at"] = self.at.isoformat()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


class EventSink(Protocol):
    def emit(self, event: AuditEvent) -> None: ...


class NullSink:
    """Where no audit store is configured nor required by the policy: drops events."""

    def emit(self, event: AuditEvent) -> None:
        pass


def default_actor() -> str:
    """``user@host`` for CLI runs, so a lock holder or an audit row names a person and a machine."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
