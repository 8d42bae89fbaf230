"""The adapter conformance suite: what every technology's adapter must do, on a real server.

Use it from a technology's integration tests by subclassing ``AdapterConformance`` and providing
the ``kit`` fixture (an ``AdapterKit``); pytest collects the inherited tests:

    class TestPostgresConformance(AdapterConformance):
        @pytest.fixture
        def kit(self, fresh_pg_database): return AdapterKit(...)
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from polymigrate.adapters.base import Adapter
from polymigrate.catalog import discover
from polymigrate.errors import LockNotAcquired, PermanentError
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext, Status


@dataclass
class AdapterKit:
    technology: str
    make_adapter: Callable[[], Adapter]          # a new adapter (own client) on the same fresh target
    good_files: dict[str, str]                   # file name -> text: two or more valid migrations
    broken_file: tuple[str, str]                 # (file name, text) failing permanently; versioned after good_files
    tmp_path: Path
    # how to change a file's content without breaking its syntax (a trailing comment for SQL/Lua)
    edit: Callable[[str], str] = lambda text: text + "\n-- edited after it ran\n"
    # (file name, text the server refuses before anything of it runs, the fixed text): versioned after
    # good_files; None where the technology has no such failure to show
    nothing_run_file: tuple[str, str, str] | None = None
    # (file name, text): the undo file of the last of good_files, for adapters declaring ``reversible``
    undo_file: tuple[str, str] | None = None

    def folder(self, files: dict[str, str]) -> Path:
        d = self.tmp_path / f"m{len(list(self.tmp_path.iterdir()))}" / self.technology
        d.mkdir(parents=True)
        for name, text in files.items():
            (d / name).write_text(text, encoding="utf-8")
        return d

    def migrations(self, files: dict[str, str]):
        cat = discover("conformance", self.technology, self.folder(files))
        assert not cat.problems, cat.problems
        return cat.applicable(self.technology)


def ctx(**kw) -> RunContext:
    values = dict(domain="conformance", environment="testing", region="r1", actor="tester@host",
                  run_id="run-1", lock_wait_seconds=5)
    return RunContext(**{**values, **kw})


class RecoveryConformance:
    """The way back after an ordinary mistake, through the command layer (what the CLI and the
    Airflow tasks call): every adapter has ``repair`` and ``baseline``, and a file that failed before
    anything of it ran is fixed and rerun (docs/reliability.md#the-way-back)."""

    def test_a_file_that_failed_before_anything_ran_is_fixed_and_rerun_with_its_new_text(self, kit: AdapterKit):
        if kit.nothing_run_file is None:
            pytest.skip(f"{kit.technology}: no file the server refuses before running any of it")
        name, broken, fixed = kit.nothing_run_file
        a = kit.make_adapter()
        try:
            with pytest.raises(PermanentError) as info:
                migrate(a, kit.migrations({**kit.good_files, name: broken}), ctx())
            assert name in str(info.value)
            # a row of the failed try (engines without a transaction around a file) is run again
            action = "rerun" if any(e.script == name for e in a.read_ledger()) else "apply"
            migs = kit.migrations({**kit.good_files, name: fixed})
            result = migrate(a, migs, ctx(run_id="run-2"))
            assert [(x["script"], x["action"]) for x in result.applied] == [(name, action)]
            [row] = [e for e in a.read_ledger() if e.script == name]
            assert row.status is Status.SUCCESS and row.checksum == migs[-1].checksum
            assert row.progress.get("untouched") is None and "error" not in row.progress
            assert migrate(a, migs, ctx(run_id="run-3")).applied == []
        finally:
            a.close()

    def test_repair_realigns_a_changed_file_and_marks_a_missing_one_deleted(self, kit: AdapterKit):
        from polymigrate.commands import verbs

        names = sorted(kit.good_files)
        a = kit.make_adapter()
        try:
            migrate(a, kit.migrations(kit.good_files), ctx())
            edited = {n: kit.good_files[n] for n in names[1:]}  # the first file is gone, the last edited
            edited[names[-1]] = kit.edit(kit.good_files[names[-1]])
            migs = kit.migrations(edited)
            with pytest.raises(PermanentError):
                migrate(a, migs, ctx(run_id="run-2"))
            report = verbs.repair(a, migs, ctx(run_id="repair-1"))
            assert (report.realigned, report.removed) == ([names[-1]], [names[0]])
            assert migrate(a, migs, ctx(run_id="run-3")).applied == []
            rows = {e.script: e for e in a.read_ledger()}
            assert rows[names[-1]].checksum == migs[-1].checksum and rows[names[0]].status is Status.DELETED
            again = verbs.repair(a, migs, ctx(run_id="repair-2"))
            assert (again.realigned, again.removed) == ([], [])
        finally:
            a.close()

    def test_baseline_marks_earlier_versions_applied_once_and_refuses_a_used_ledger(self, kit: AdapterKit):
        from polymigrate.commands import verbs

        migs = kit.migrations(kit.good_files)
        a = kit.make_adapter()
        try:
            # the target already has what the files make (made by hand, or by another tool): adopt it
            version = str(migs[-1].version)
            verbs.baseline(a, ctx(), version, "adopted")
            verbs.baseline(a, ctx(), version, "adopted")  # a retried baseline is a no-op
            [row] = a.read_ledger()
            assert (row.status, row.version) == (Status.BASELINE, version)
            assert migrate(a, migs, ctx()).applied == []  # nothing at or below the baseline runs
            with pytest.raises(PermanentError, match="already has"):
                verbs.baseline(a, ctx(), "99", "late")
        finally:
            a.close()


class CapabilityConformance:
    """What each adapter declares it can do (``Adapter.capabilities``), asked and shown on the server:
    a declared capability is exercised, one not declared is skipped with its name, or its absence is
    what the user is told."""

    def test_transactional_a_failed_file_leaves_nothing_of_itself_behind(self, kit: AdapterKit):
        a = kit.make_adapter()
        try:
            if not a.capabilities.transactional:
                pytest.skip(f"{kit.technology}: capability 'transactional' not declared")
            migrate(a, kit.migrations(kit.good_files), ctx())
            before = a.snapshot()
            with pytest.raises(PermanentError):
                migrate(a, kit.migrations({**kit.good_files, kit.broken_file[0]: kit.broken_file[1]}), ctx(run_id="run-2"))
            assert a.snapshot() == before  # the statements before the failing one were rolled back with it
        finally:
            a.close()

    def test_reversible_decides_whether_undo_reverts_or_asks_for_a_forward_migration(self, kit: AdapterKit):
        from polymigrate.executor import undo_to

        migs = kit.migrations(kit.good_files)
        first, last = str(migs[0].version), max(kit.good_files)
        a = kit.make_adapter()
        try:
            if not a.capabilities.reversible:
                migrate(a, migs, ctx())
                with pytest.raises(PermanentError, match="no undo files; to revert it, write a new forward migration"):
                    undo_to(a, migs, ctx(run_id="undo"), first, dry_run=True)
                return
            if kit.undo_file is None:
                pytest.skip(f"{kit.technology}: capability 'reversible' declared; this kit names no undo file")
            migrate(a, kit.migrations({n: t for n, t in kit.good_files.items() if n != last}), ctx())
            before = a.snapshot()
            folder = kit.folder({**kit.good_files, kit.undo_file[0]: kit.undo_file[1]})
            cat = discover("conformance", kit.technology, folder)
            migrate(a, cat.applicable(kit.technology), ctx(run_id="run-2"))
            undone = undo_to(a, cat.migrations[kit.technology], ctx(run_id="undo"), first)
            assert [x["script"] for x in undone.applied] == [kit.undo_file[0]]
            assert a.snapshot() == before
        finally:
            a.close()

    def test_adopts_names_the_one_tool_whose_history_the_adapter_takes_over(self, kit: AdapterKit):
        from polymigrate.commands import verbs

        a = kit.make_adapter()
        try:
            tool = a.capabilities.adopts
            with pytest.raises(PermanentError, match=f"{kit.technology} cannot adopt a some-other-tool history"):
                verbs.adopt(a, [], ctx(), tool="some-other-tool")
            if tool is None:
                with pytest.raises(PermanentError, match="adopts no other tool's history"):
                    a.adopt(ctx(), [])
            else:  # the history is looked for where it is said to be, and its absence named
                with pytest.raises(PermanentError, match="nope_history"):
                    verbs.adopt(a, [], ctx(), tool=tool, source="nope_history")
            assert a.read_ledger() == []
        finally:
            a.close()


class AdapterConformance(CapabilityConformance, RecoveryConformance):
    """Inherited by each adapter's integration test class."""

    def test_fresh_target_has_empty_ledger_created_on_read(self, kit: AdapterKit):
        a = kit.make_adapter()
        try:
            assert a.read_ledger() == []
            assert a.read_ledger() == []  # creating it twice is harmless
        finally:
            a.close()

    def test_migrate_records_each_migration_once_with_context(self, kit: AdapterKit):
        migs = kit.migrations(kit.good_files)
        a = kit.make_adapter()
        try:
            result = migrate(a, migs, ctx())
            assert [x["script"] for x in result.applied] == [m.script for m in migs]
            entries = [e for e in a.read_ledger() if e.status is Status.SUCCESS]
            assert [(e.version, e.checksum) for e in entries] == [(str(m.version) if m.version else None, m.checksum) for m in migs]
            assert all(e.run_id == "run-1" and e.environment == "testing" and e.region == "r1" for e in entries)
            assert all(e.success and e.installed_by for e in entries)
        finally:
            a.close()

    def test_second_run_is_a_no_op(self, kit: AdapterKit):
        migs = kit.migrations(kit.good_files)
        a = kit.make_adapter()
        try:
            migrate(a, migs, ctx())
            before = a.read_ledger()
            again = migrate(a, migs, ctx(run_id="run-2"))
            assert again.applied == []
            assert len(a.read_ledger()) == len(before)
        finally:
            a.close()

    def test_snapshot_reflects_applied_changes(self, kit: AdapterKit):
        a = kit.make_adapter()
        try:
            a.read_ledger()
            before = a.snapshot()
            migrate(a, kit.migrations(kit.good_files), ctx())
            assert a.snapshot() != before
        finally:
            a.close()

    def test_health_checks_pass_after_a_clean_run_and_are_read_only(self, kit: AdapterKit):
        """Every adapter has the verify step's built-in checks, the same shape: ``Check``s that all
        hold after a clean run, and change nothing (the ledger and the snapshot stay as they were)."""
        from polymigrate.adapters.base import Check

        migs = kit.migrations(kit.good_files)
        a = kit.make_adapter()
        try:
            migrate(a, migs, ctx())
            ledger, snap = a.read_ledger(), a.snapshot()
            checks = a.health_checks(ctx(), migs)
            assert all(isinstance(c, Check) and c.technology == kit.technology for c in checks)
            assert [str(c) for c in checks if not c.ok] == []
            assert a.read_ledger() == ledger and a.snapshot() == snap
        finally:
            a.close()

    def test_lock_is_exclusive_and_names_its_holder(self, kit: AdapterKit):
        a, b = kit.make_adapter(), kit.make_adapter()
        try:
            a.read_ledger()
            with a.lock("alice@host run=1", 1):
                with pytest.raises(LockNotAcquired) as info:
                    with b.lock("bob@host run=2", 0.2):
                        pass
                assert "alice@host run=1" in str(info.value)
            with b.lock("bob@host run=2", 1):  # released on exit
                pass
        finally:
            a.close()
            b.close()

    def test_lock_waits_for_the_holder(self, kit: AdapterKit):
        a, b = kit.make_adapter(), kit.make_adapter()
        got = []
        try:
            a.read_ledger()
            with a.lock("alice", 1):
                t = threading.Thread(target=lambda: got.append(b.lock("bob", 10).__enter__()))
                t.start()
                t.join(0.3)
                assert got == []  # still waiting
            t.join(10)
            assert len(got) == 1
        finally:
            a.close()
            b.close()

    def test_broken_migration_fails_permanently_and_is_not_recorded_as_success(self, kit: AdapterKit):
        files = dict(kit.good_files)
        files[kit.broken_file[0]] = kit.broken_file[1]
        migs = kit.migrations(files)
        a = kit.make_adapter()
        try:
            with pytest.raises(PermanentError) as info:
                migrate(a, migs, ctx())
            assert kit.broken_file[0] in str(info.value)
            ok = {e.script for e in a.read_ledger() if e.status is Status.SUCCESS}
            assert kit.broken_file[0] not in ok
            assert ok == set(kit.good_files)  # the good ones before it stay applied
        finally:
            a.close()

    def test_changed_checksum_stops_the_run_naming_the_file(self, kit: AdapterKit):
        migs = kit.migrations(kit.good_files)
        a = kit.make_adapter()
        try:
            migrate(a, migs, ctx())
            first = sorted(kit.good_files)[0]
            edited = dict(kit.good_files)
            edited[first] = kit.edit(kit.good_files[first])
            with pytest.raises(PermanentError) as info:
                migrate(a, kit.migrations(edited), ctx())
            assert first in str(info.value) and "repair" in str(info.value)
        finally:
            a.close()

