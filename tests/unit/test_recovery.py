"""The recovery rule's words: what of a half-done file committed, from its row's progress (issue 28)."""

from __future__ import annotations

from polymigrate.catalog import Kind, Migration
from polymigrate.ledger import LedgerEntry, Status
from polymigrate.reconcile import State, reconcile, validation_problems
from polymigrate.recovery import UNTOUCHED, what_ran


def row(progress: dict, status: Status = Status.FAILED, checksum: int = 1) -> LedgerEntry:
    return LedgerEntry(installed_rank=1, version="1", description="x", type="LUA", script="1-x.lua",
                       checksum=checksum, success=False, status=status, progress=progress)


def test_what_ran_names_each_engines_progress_and_never_says_zero_statements():
    assert what_ran(row({"statements_done": 2})) == "2 statement(s) committed"
    assert what_ran(row({"commands_done": 1, "commands": 3})) == "1 command(s) done"
    assert "checkpoints of 1 transform(s)" in what_ran(row({"transforms": {"t1": {"last_id": 5}}}))
    assert what_ran(row({"steps_done": 2})) == "step(s) 1–2 done"
    assert what_ran(row({"processed": 10, "batches": 2, "cursor": "11"})) == "10 key(s) in 2 batch(es), cursor 11"
    assert "script was called" in what_ran(row({"called": True}))
    assert "statement" not in what_ran(row({}))


def _migration(tmp_path, checksum: int) -> Migration:
    from polymigrate.catalog import discover

    folder = tmp_path / "redis"
    folder.mkdir(exist_ok=True)
    (folder / "1-x.lua").write_text(f"return {checksum}\n")
    [m] = discover("shop", "redis", folder).applicable("redis")
    return m


def test_a_changed_file_reruns_only_when_its_failed_try_committed_nothing(tmp_path):
    m = _migration(tmp_path, 7)
    assert m.kind is Kind.VERSIONED
    untouched = row({UNTOUCHED: True, "error": "x"}, checksum=m.checksum + 1)
    [info] = reconcile([m], [untouched])
    assert info.state is State.INCOMPLETE and validation_problems([info]) == []
    half = row({"processed": 10, "batches": 2, "cursor": "11"}, checksum=m.checksum + 1)
    [info] = reconcile([m], [half])
    [problem] = validation_problems([info])
    assert info.state is State.CHANGED and "10 key(s) in 2 batch(es), cursor 11" in problem and "repair" in problem
    crashed = row({}, status=Status.STARTED, checksum=m.checksum + 1)  # a crashed run: never untouched
    assert reconcile([m], [crashed])[0].state is State.CHANGED
