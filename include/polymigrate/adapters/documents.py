"""``repair`` and ``baseline`` for ledgers stored as documents (Redis, Elasticsearch): the same
rules as PostgreSQL's and MongoDB's, the adapter only supplies how a row is written (fenced by its
lease, as every ledger write of a run)."""

from __future__ import annotations

import getpass
from datetime import datetime, timezone
from typing import Callable

from polymigrate.adapters.base import RepairReport
from polymigrate.catalog import Kind, Migration
from polymigrate.ledger import LedgerEntry, RunContext, Status
from polymigrate.reconcile import State, reconcile


def repair_rows(migrations: list[Migration], entries: list[LedgerEntry],
                write: Callable[[LedgerEntry], None]) -> RepairReport:
    """Realign the checksum of every changed file (a half-done row keeps its progress, so the next
    run resumes after what committed) and mark rows whose file is gone ``deleted`` (kept)."""
    report = RepairReport([], [])
    for i in reconcile([m for m in migrations if m.kind is not Kind.UNDO], entries, out_of_order=True):
        e = i.entry
        if e is None:
            continue
        if i.state is State.MISSING:
            e.status, e.success = Status.DELETED, False
            write(e)
            report.removed.append(e.script)
        elif i.state is State.CHANGED and i.migration is not None:
            m = i.migration
            e.checksum, e.sha256, e.description, e.script = m.checksum, m.sha256, m.description, m.script
            write(e)
            report.realigned.append(m.script)
    return report


def baseline_entry(domain: str, rank: int, version: str, description: str, ctx: RunContext) -> LedgerEntry:
    return LedgerEntry(installed_rank=rank, version=version, description=description or "<< Baseline >>",
                       type="BASELINE", script=description or "<< Baseline >>", checksum=None,
                       installed_by=ctx.actor or getpass.getuser(), installed_on=datetime.now(timezone.utc),
                       success=True, status=Status.BASELINE, domain=domain, run_id=ctx.run_id,
                       environment=ctx.environment, region=ctx.region, plan_hash=ctx.plan_hash)
