"""What a target's ledger holds, independent of the engine that stores it.

Columns are a superset of Flyway's ``flyway_schema_history`` so a Flyway history can be imported
row for row, plus what polymigrate needs to resume and to audit (status, progress, run id,
environment, region, plan hash).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


class Status(str, enum.Enum):
    STARTED = "started"    # written before a non-transactional migration: a retry resumes from progress
    SUCCESS = "success"
    FAILED = "failed"      # a non-transactional migration stopped half way; progress says how far
    BASELINE = "baseline"  # marked as applied without running
    UNDONE = "undone"      # reverted by its U file
    DELETED = "deleted"    # removed by repair; kept for the record

    @property
    def incomplete(self) -> bool:
        """A run stopped half way (or is still running): a retry resumes it from its progress."""
        return self in (Status.STARTED, Status.FAILED)


@dataclass
class LedgerEntry:
    installed_rank: int
    version: str | None
    description: str
    type: str
    script: str
    checksum: int | None
    installed_by: str = ""
    installed_on: datetime | None = None
    execution_time: int = 0  # milliseconds, as Flyway
    success: bool = True
    status: Status = Status.SUCCESS
    domain: str = ""
    sha256: str | None = None
    run_id: str | None = None
    environment: str | None = None
    region: str | None = None
    plan_hash: str | None = None
    progress: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        d["installed_on"] = self.installed_on.isoformat() if self.installed_on else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LedgerEntry":
        """The inverse of ``to_dict`` (for ledgers stored as documents: Redis, MongoDB, Elasticsearch)."""
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}  # tolerate fields added later
        d["status"] = Status(d.get("status", Status.SUCCESS.value))
        if d.get("installed_on"):
            d["installed_on"] = datetime.fromisoformat(d["installed_on"])
        d["progress"] = dict(d.get("progress") or {})
        return cls(**d)


@dataclass(frozen=True)
class RunContext:
    """Who is running, and where: written into ledger rows, lock owners and audit events."""

    domain: str
    environment: str = "adhoc"
    region: str = "default"
    actor: str = ""
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None
    dag_id: str | None = None
    placeholders: dict[str, str] = field(default_factory=dict)
    lock_timeout: str | None = "10s"
    statement_timeout: str | None = None
    lock_wait_seconds: float = 300.0
    plan_hash: str | None = None  # the approved plan this run executes, written into ledger rows

    @property
    def owner(self) -> str:
        """Human-readable lock owner shown to a run that has to wait."""
        parts = [self.actor or "unknown"]
        if self.dag_id:
            parts.append(f"dag={self.dag_id}")
        if self.run_id:
            parts.append(f"run={self.run_id}")
        if self.task_id:
            parts.append(f"task={self.task_id}")
        if self.try_number is not None:
            parts.append(f"try={self.try_number}")
        return " ".join(parts)


def fingerprint(entries: list[LedgerEntry]) -> str:
    """One hash of every row as read (versions, checksums, states, progress, who and when): plan
    records it per target so an execute task can tell, with one read and no file, that the ledger
    is still the one plan found nothing pending against. Any difference at all means "changed"."""
    import json

    from polymigrate.checksums import sha256

    rows = sorted((e.to_dict() for e in entries), key=lambda d: (d["installed_rank"], d["script"]))
    return sha256(json.dumps(rows, sort_keys=True, separators=(",", ":"), default=str))
