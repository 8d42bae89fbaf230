"""The way back after a failed file, the same on every engine (docs/reliability.md#the-way-back).

The rule for a file changed after it failed:

* **nothing of it committed** (its row's progress carries ``untouched``, written by the adapter only
  when it knows no change reached the target: a Lua script the server refused to compile, a step
  the server rejected before doing anything) → the next run runs the new text, and its row takes
  the new checksum;
* **part of it committed** → the run is refused, saying what ran (``what_ran``) and the choices.

``adapters.documents`` has the ``repair`` / ``baseline`` verbs for ledgers stored as documents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from polymigrate.ledger import LedgerEntry

if TYPE_CHECKING:
    from polymigrate.catalog import Migration

UNTOUCHED = "untouched"  # progress flag: this row's file changed nothing on the target
UNDO = "undo"  # progress key: an undo of this applied row began (and has not finished)


def half_undone(entry: LedgerEntry) -> bool:
    """An undo of this applied version began and did not finish: part of what it reverts may be gone,
    so neither ``success`` nor a migrate run over it is true; the same undo, run again, resumes it.
    PostgreSQL and MongoDB keep the undo's progress under ``progress.undo``; Elasticsearch under each
    switch it reverts."""
    from polymigrate.ledger import Status
    if entry.status is not Status.SUCCESS:
        return False
    p = entry.progress or {}
    if isinstance(p.get(UNDO), dict):
        return True
    return any(isinstance(sw, dict) and sw.get(UNDO) for sw in p.get("switches") or [])


def nothing_committed(entry: LedgerEntry) -> bool:
    return entry.status.incomplete and bool(entry.progress.get(UNTOUCHED))


def take_new_text(entry: LedgerEntry, migration: "Migration") -> None:
    """A resumed row whose file changed while nothing of it had committed: it now records the new
    file, and starts from nothing (the old text's progress means nothing for the new one)."""
    if entry.checksum == migration.checksum or not nothing_committed(entry):
        return
    entry.checksum, entry.sha256 = migration.checksum, migration.sha256
    entry.script, entry.description = migration.script, migration.description
    entry.progress = {}


def what_ran(entry: LedgerEntry) -> str:
    """What of a half-done file committed, in the words of its progress."""
    p = entry.progress
    parts = []
    if p.get("statements_done"):
        parts.append(f"{p['statements_done']} statement(s) committed")
    if p.get("commands_done"):
        parts.append(f"{p['commands_done']} command(s) done")
    if p.get("transforms"):
        parts.append(f"checkpoints of {len(p['transforms'])} transform(s) (their documents changed so far stay)")
    if p.get("steps_done"):
        parts.append(f"step(s) 1–{p['steps_done']} done")
    if p.get("step_state"):
        parts.append(f"step {int(p.get('step_index', 0)) + 1} had begun ({', '.join(sorted(p['step_state']))})")
    if p.get("batches") or p.get("processed"):
        parts.append(f"{p.get('processed', 0)} key(s) in {p.get('batches', 0)} batch(es), cursor {p.get('cursor', '?')}")
    if p.get("called"):
        parts.append("the script was called, and Redis keeps what a script wrote before its error")
    return "; ".join(parts) or "it stopped while running, so part of it may have committed"


def what_was_undone(entry: LedgerEntry) -> str:
    """What of a half-done undo committed, in the words of its progress."""
    u = (entry.progress or {}).get(UNDO)
    if isinstance(u, dict):
        done = LedgerEntry(entry.installed_rank, entry.version, entry.description, entry.type, entry.script,
                           entry.checksum, progress={k: v for k, v in u.items() if k != "called"})
        text = what_ran(done)
        script = u.get("script")
        return f"{script}: {text}" if script else text
    switched = [sw.get("alias", "?") for sw in (entry.progress or {}).get("switches") or []
                if isinstance(sw, dict) and (sw.get(UNDO) or {}).get("phase") in ("switched", "done")]
    return f"alias(es) {', '.join(switched)} switched back" if switched else "its undo began"
