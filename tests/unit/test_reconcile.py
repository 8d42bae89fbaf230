"""Reconcile: files × ledger → one state per migration, what runs, and what must stop a run."""

from dataclasses import replace
from pathlib import Path

import pytest

from polymigrate.catalog import Kind, Migration
from polymigrate.checksums import flyway_checksum, sha256
from polymigrate.errors import ValidationFailed
from polymigrate.ledger import LedgerEntry, Status
from polymigrate.reconcile import State, current_version, reconcile, to_apply, validate, validation_problems
from polymigrate.versions import Version


def mig(version: str | None, text: str = "SELECT 1;", *, kind: Kind = Kind.VERSIONED, desc: str | None = None) -> Migration:
    desc = desc or f"step {version}"
    prefix = {"versioned": f"V{version}", "undo": f"U{version}", "repeatable": "R"}[kind.value]
    script = f"{prefix}__{desc.replace(' ', '_')}.sql"
    return Migration(domain="shop", technology="postgresql", kind=kind,
                     version=Version(version) if version else None, description=desc, script=script,
                     path=Path(script), checksum=flyway_checksum(text), sha256=sha256(text), text=text)


def rep(desc: str, text: str = "CREATE OR REPLACE VIEW v AS SELECT 1;") -> Migration:
    return mig(None, text, kind=Kind.REPEATABLE, desc=desc)


def row(rank: int, m: Migration | None = None, *, version: str | None = None, checksum: int | None = None,
        status: Status = Status.SUCCESS, desc: str | None = None) -> LedgerEntry:
    """A ledger row as the adapter would have written it for ``m`` (or for a file that is gone)."""
    return LedgerEntry(installed_rank=rank,
                       version=version if version is not None else (str(m.version) if m and m.version else None),
                       description=desc or (m.description if m else f"step {version}"),
                       type="SQL", script=m.script if m else f"V{version}__gone.sql",
                       checksum=checksum if checksum is not None else (m.checksum if m else 123),
                       status=status, success=status in (Status.SUCCESS, Status.BASELINE))


def states(infos) -> list[tuple[str | None, str]]:
    return [(i.version or i.description, i.state.value) for i in infos]


V1, V2, V3 = mig("1"), mig("2", "SELECT 2;"), mig("3", "SELECT 3;")


# --- one test per state -----------------------------------------------------------------------

def test_pending_when_nothing_applied():
    infos = reconcile([V1, V2], [])
    assert states(infos) == [("1", "pending"), ("2", "pending")]
    assert [i.version for i in to_apply(infos)] == ["1", "2"]
    assert current_version(infos) is None


def test_success_when_applied_with_the_same_checksum():
    infos = reconcile([V1, V2], [row(1, V1)])
    assert states(infos) == [("1", "success"), ("2", "pending")]
    assert current_version(infos) == "1"
    assert [i.version for i in to_apply(infos)] == ["2"]


def test_incomplete_started_or_failed_row_resumes_in_place():
    infos = reconcile([V1, V2, V3], [row(1, V1), row(2, V2, status=Status.STARTED)])
    assert states(infos)[1] == ("2", "incomplete")
    assert [(i.version, i.state.value) for i in to_apply(infos)] == [("2", "incomplete"), ("3", "pending")]
    assert validation_problems(infos) == []
    assert states(reconcile([V1, V2], [row(1, V1), row(2, V2, status=Status.FAILED)]))[1] == ("2", "incomplete")


def test_incomplete_row_whose_file_changed_is_changed():
    infos = reconcile([V1, V2], [row(1, V1), row(2, V2, checksum=V2.checksum + 1, status=Status.FAILED)])
    assert states(infos)[1] == ("2", "changed")


def test_changed_when_the_file_differs_from_what_was_applied():
    edited = mig("1", "SELECT 1; -- edited after it ran")
    infos = reconcile([edited, V2], [row(1, V1)])
    assert states(infos) == [("1", "changed"), ("2", "pending")]
    (problem,) = validation_problems(infos)
    assert "V1__step_1.sql" in problem and str(V1.checksum) in problem and str(edited.checksum) in problem
    assert "repair" in problem
    with pytest.raises(ValidationFailed, match="V1__step_1.sql"):
        validate(infos)


def test_line_ending_only_edits_are_not_changes():
    crlf = mig("1", "SELECT 1;\r\n")
    assert states(reconcile([crlf], [row(1, mig("1", "SELECT 1;\n"))])) == [("1", "success")]


def test_missing_when_an_applied_file_is_gone():
    infos = reconcile([V1, V3], [row(1, V1), row(2, V2), row(3, V3)])
    assert states(infos) == [("1", "success"), ("2", "missing"), ("3", "success")]
    (problem,) = validation_problems(infos)
    assert "version 2" in problem and "restore the file" in problem


def test_future_when_the_ledger_is_ahead_of_the_files():
    infos = reconcile([V1, V2], [row(1, V1), row(2, V2), row(3, V3)])
    assert states(infos)[-1] == ("3", "future")
    assert validation_problems(infos) == []  # another branch ran ahead: not this run's business
    assert current_version(infos) == "3"
    assert to_apply(infos) == []


def test_ignored_when_a_lower_version_appears_after_a_higher_one_ran():
    infos = reconcile([V1, V2, V3], [row(1, V1), row(2, V3)])
    assert states(infos) == [("1", "success"), ("2", "ignored"), ("3", "success")]
    assert to_apply(infos) == []
    (problem,) = validation_problems(infos)
    assert "V2__step_2.sql" in problem and "--out-of-order" in problem
    # allowed explicitly, it is simply pending
    allowed = reconcile([V1, V2, V3], [row(1, V1), row(2, V3)], out_of_order=True)
    assert [i.version for i in to_apply(allowed)] == ["2"]
    assert validation_problems(allowed, out_of_order=True) == []


def test_out_of_order_once_applied_that_way():
    infos = reconcile([V1, V2, V3], [row(1, V1), row(2, V3), row(3, V2)])
    assert states(infos) == [("1", "success"), ("2", "out_of_order"), ("3", "success")]
    assert validation_problems(infos) == [] and to_apply(infos) == []
    assert current_version(infos) == "3"


def test_above_target():
    infos = reconcile([V1, V2, V3], [row(1, V1)], target_version="2")
    assert states(infos) == [("1", "success"), ("2", "pending"), ("3", "above_target")]
    assert [i.version for i in to_apply(infos)] == ["2"]
    # target compares like versions: 2.0 is 2
    assert states(reconcile([V1, V2, V3], [], target_version="2.0"))[2] == ("3", "above_target")


def test_baseline_and_below_baseline():
    baseline = row(1, None, version="2", checksum=None, status=Status.BASELINE, desc="<< Flyway Baseline >>")
    infos = reconcile([V1, V2, V3], [baseline])
    assert states(infos) == [("1", "below_baseline"), ("2", "baseline"), ("3", "pending")]
    assert [i.version for i in to_apply(infos)] == ["3"]
    assert validation_problems(infos) == []
    assert current_version(infos) == "2"


def test_baseline_without_a_file_is_still_baseline():
    infos = reconcile([V3], [row(1, None, version="2", checksum=None, status=Status.BASELINE)])
    assert states(infos) == [("2", "baseline"), ("3", "pending")]
    assert validation_problems(infos) == []


def test_undone_is_pending_again():
    infos = reconcile([V1, V2], [row(1, V1), row(2, V2, status=Status.UNDONE)])
    assert states(infos) == [("1", "success"), ("2", "undone")]
    assert [i.version for i in to_apply(infos)] == ["2"]
    assert current_version(infos) == "1"


def test_reapplied_after_undo_is_success_the_latest_row_wins():
    infos = reconcile([V1, V2], [row(1, V1), row(2, V2, status=Status.UNDONE), row(3, V2)])
    assert states(infos) == [("1", "success"), ("2", "success")]


def test_deleted_rows_are_forgotten():
    infos = reconcile([V1, V2], [row(1, V1), row(2, V2, status=Status.DELETED)])
    assert states(infos) == [("1", "success"), ("2", "pending")]


# --- repeatables ------------------------------------------------------------------------------

def test_repeatable_pending_success_outdated_superseded():
    view_v1 = rep("user directory", "CREATE OR REPLACE VIEW v AS SELECT 1;")
    view_v2 = rep("user directory", "CREATE OR REPLACE VIEW v AS SELECT 2;")
    grants = rep("grants")
    assert states(reconcile([grants], [])) == [("grants", "pending")]
    assert states(reconcile([view_v1], [row(1, view_v1)])) == [("user directory", "success")]
    infos = reconcile([V1, view_v2], [row(1, V1), row(2, view_v1)])
    assert states(infos) == [("1", "success"), ("user directory", "outdated")]
    assert [(i.description, i.state.value) for i in to_apply(infos)] == [("user directory", "outdated")]
    assert validation_problems(infos) == []
    infos = reconcile([view_v2], [row(1, view_v1), row(2, view_v2)])
    assert states(infos) == [("user directory", "superseded"), ("user directory", "success")]
    assert to_apply(infos) == []


def test_repeatable_incomplete_and_missing():
    view = rep("user directory")
    assert states(reconcile([view], [row(1, view, status=Status.FAILED)])) == [("user directory", "incomplete")]
    infos = reconcile([], [row(1, view)])
    assert states(infos) == [("user directory", "missing")]
    assert "restore the file" in validation_problems(infos)[0]


def test_a_repeatable_recorded_with_flyways_replaced_placeholder_checksum_is_up_to_date():
    text = "CREATE OR REPLACE VIEW v AS SELECT '${region}' AS region;"
    view = rep("regional view", text)
    as_run = flyway_checksum(text.replace("${region}", "weu"))  # what Flyway and polymigrate record
    ours = replace(row(1, view, checksum=as_run), sha256=view.sha256)
    assert states(reconcile([view], [ours])) == [("regional view", "success")]
    assert states(reconcile([view], [replace(ours, status=Status.STARTED)])) == [("regional view", "incomplete")]
    # Flyway's own row (no sha256) cannot be matched without the values: run once more
    assert states(reconcile([view], [row(1, view, checksum=as_run)])) == [("regional view", "outdated")]
    edited = rep("regional view", text + "\n-- edited")
    assert states(reconcile([edited], [ours])) == [("regional view", "outdated")]


def test_repeatables_run_after_versioned_in_description_order():
    infos = reconcile([rep("b view"), V2, rep("a grants"), V1], [])
    assert [i.version or i.description for i in to_apply(infos)] == ["1", "2", "a grants", "b view"]


# Table: one scenario per State, so a new State without a scenario fails the last test.
_VIEW_OLD, _VIEW_NEW = rep("v", "SELECT 1;"), rep("v", "SELECT 2;")


def _half_undone(e: LedgerEntry) -> LedgerEntry:
    e.progress["undo"] = {"script": "U1__a.sql", "statements_done": 1}  # an undo began and stopped
    return e


SCENARIOS = [
    (State.PENDING, [V1], [], {}, "1"),
    (State.SUCCESS, [V1], [row(1, V1)], {}, "1"),
    (State.INCOMPLETE, [V1], [row(1, V1, status=Status.STARTED)], {}, "1"),
    (State.CHANGED, [mig("1", "SELECT 42;")], [row(1, V1)], {}, "1"),
    (State.MISSING, [V2], [row(1, V1), row(2, V2)], {}, "1"),
    (State.FUTURE, [V1], [row(1, V1), row(2, V2)], {}, "2"),
    (State.IGNORED, [V1, V2], [row(1, V2)], {}, "1"),
    (State.OUT_OF_ORDER, [V1, V2], [row(1, V2), row(2, V1)], {}, "1"),
    (State.ABOVE_TARGET, [V1, V2], [], {"target_version": "1"}, "2"),
    (State.BASELINE, [V1], [row(1, V1, checksum=None, status=Status.BASELINE)], {}, "1"),
    (State.BELOW_BASELINE, [V1, V2], [row(1, V2, checksum=None, status=Status.BASELINE)], {}, "1"),
    (State.UNDONE, [V1], [row(1, V1, status=Status.UNDONE)], {}, "1"),
    (State.HALF_UNDONE, [V1], [_half_undone(row(1, V1))], {}, "1"),
    (State.OUTDATED, [_VIEW_NEW], [row(1, _VIEW_OLD)], {}, "v"),
    (State.SUPERSEDED, [_VIEW_NEW], [row(1, _VIEW_OLD), row(2, _VIEW_NEW)], {}, "v"),
]


@pytest.mark.parametrize("expected, files, rows, kwargs, key", SCENARIOS, ids=[s[0].value for s in SCENARIOS])
def test_state_table(expected, files, rows, kwargs, key):
    assert (key, expected.value) in states(reconcile(files, rows, **kwargs))


def test_every_state_has_a_scenario():
    assert {s[0] for s in SCENARIOS} == set(State)
