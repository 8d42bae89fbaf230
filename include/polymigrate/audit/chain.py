"""The audit store's hash chain: the canonical text of an event, the hash linking each row to the one
before, and the walk that finds the first broken link (``PostgresAuditStore.verify`` feeds it the
rows of one snapshot). No database here: what is hashed and how it is checked, on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator

from polymigrate.checksums import sha256
from polymigrate.events import AuditEvent

GENESIS_HASH = "0" * 64
# Event fields mirrored into columns; verify checks each against the hashed body.
COLUMNS = ("at", "kind", "domain", "environment", "region", "technology", "version", "script", "checksum",
           "actor", "run_id", "dag_id", "task_id", "try_number", "duration_ms")


def canonical_json(event: AuditEvent) -> str:
    """The exact text that is hashed: sorted keys, no whitespace, UTF-8 kept as is."""
    return json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def chain_hash(prev_hash: str, body: str) -> str:
    """The hash of one row: sha256 over the previous row's hash followed by the row's body."""
    return sha256(prev_hash + body)


def event_from_body(body: str) -> AuditEvent:
    """Rebuild an ``AuditEvent`` from its stored canonical JSON."""
    d = json.loads(body)
    d["at"] = datetime.fromisoformat(d["at"])
    return AuditEvent(**d)


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of walking the chain: ``ok``, or the first broken link and what differs there."""

    ok: bool
    checked: int
    last_id: int
    last_hash: str
    broken_id: int | None = None
    problem: str | None = None

    def __str__(self) -> str:
        if self.ok:
            return f"chain intact: {self.checked} rows, last row {self.last_id}, head hash {self.last_hash}"
        return f"chain broken at row {self.broken_id}: {self.problem} ({self.checked} rows checked before it)"


def walk(rows: Iterator[tuple], head: tuple[int, str] | None) -> VerifyResult:
    expected_id, running, checked = 1, GENESIS_HASH, 0

    def broken(row_id: int, problem: str) -> VerifyResult:
        return VerifyResult(False, checked, expected_id - 1, running, row_id, problem)

    for row_id, body, prev_hash, stored_hash, *columns in rows:
        if row_id != expected_id:
            gone = f"row {expected_id}" if row_id == expected_id + 1 else f"rows {expected_id}–{row_id - 1}"
            return broken(row_id, f"{gone} missing before it (deleted)")
        if prev_hash != running:
            return broken(row_id, f"prev_hash {prev_hash[:16]}… does not match the hash of row {row_id - 1} "
                                  f"({running[:16]}…): row {row_id - 1} was rewritten or rows were replaced")
        recomputed = chain_hash(prev_hash, body)
        if recomputed != stored_hash:
            return broken(row_id, f"the recorded event was edited after it was written: stored hash "
                                  f"{stored_hash[:16]}…, recomputed {recomputed[:16]}…")
        difference = _column_difference(body, columns)
        if difference:
            return broken(row_id, difference)
        running, expected_id, checked = stored_hash, expected_id + 1, checked + 1
    if head is None:
        return broken(expected_id, "the chain head row is missing")
    if head[0] != expected_id - 1 or head[1] != running:
        return VerifyResult(False, checked, expected_id - 1, running, expected_id,
                            f"the chain head says the last row is {head[0]} (hash {head[1][:16]}…) but the table "
                            f"ends at row {expected_id - 1}: rows at the end were deleted")
    return VerifyResult(True, checked, expected_id - 1, running)


def _column_difference(body: str, columns: list[Any]) -> str | None:
    try:
        recorded = json.loads(body)
    except ValueError:
        return "the recorded event is not valid JSON"
    for name, value in zip(COLUMNS, columns):
        want = recorded.get(name)
        if name == "at":
            want = datetime.fromisoformat(want) if want else None
        if value != want:
            return f"column {name} is {value!r} but the hashed event says {want!r}"
    return None
