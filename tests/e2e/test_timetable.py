"""The rehearsal timetable: a nightly schedule never starts a missed run on creation or unpause."""

from __future__ import annotations


import pendulum
import pytest

from airflow.timetables.base import DataInterval, TimeRestriction

from polymigrate_airflow.timetables import RehearsalTimetable, timetable_for

START = pendulum.datetime(2024, 1, 1, tz="UTC")


def first_run(now: str, last: str | None = None, catchup: bool = False):
    tt = RehearsalTimetable("0 2 * * *")
    tt.now = lambda: pendulum.parse(now)
    interval = None if last is None else DataInterval(pendulum.parse(last), pendulum.parse(last))
    info = tt.next_dagrun_info(last_automated_data_interval=interval,
                               restriction=TimeRestriction(earliest=START, latest=None, catchup=catchup))
    return info.run_after.isoformat()


@pytest.mark.parametrize("now, last, expected", [
    # created (or unpaused for the first time) at mid-day: tonight, not "this morning's" run now
    ("2026-11-30T14:00:00+00:00", None, "2026-12-01T02:00:00+00:00"),
    # created an hour after the point (the demo started at 03:11): tonight too
    ("2026-11-30T03:11:00+00:00", None, "2026-12-01T02:00:00+00:00"),
    # unpaused at 02:50 after a pause over 02:00: late but within the hour: tonight's still runs
    ("2026-11-30T02:50:00+00:00", "2026-11-29T02:00:00+00:00", "2026-11-30T02:00:00+00:00"),
    # unpaused at 04:00 after a pause over 02:00: waits for tomorrow
    ("2026-11-30T04:00:00+00:00", "2026-11-29T02:00:00+00:00", "2026-12-01T02:00:00+00:00"),
    # the next point is in the future: it, whatever else
    ("2026-11-30T01:00:00+00:00", "2026-11-29T02:00:00+00:00", "2026-11-30T02:00:00+00:00"),
    # unpaused after a week: no catch-up of last night either
    ("2026-11-30T14:00:00+00:00", "2026-11-23T02:00:00+00:00", "2026-12-01T02:00:00+00:00"),
    # the scheduler was down for 20 minutes at 02:00: tonight's rehearsal still runs, late
    ("2026-11-30T02:20:00+00:00", "2026-11-29T02:00:00+00:00", "2026-11-30T02:00:00+00:00"),
    # already ran tonight: tomorrow
    ("2026-11-30T02:20:00+00:00", "2026-11-30T02:00:00+00:00", "2026-12-01T02:00:00+00:00"),
    # created a minute after the point: that is the point it was scheduled for, not a surprise
    ("2026-11-30T02:01:00+00:00", None, "2026-11-30T02:00:00+00:00"),
])
def test_next_run(now, last, expected):
    assert first_run(now, last) == expected


def test_airflow_s_own_cron_timetable_would_start_a_run_at_once():
    # what this timetable exists for: Airflow 3.3's CronTriggerTimetable with catchup=False runs the
    # most recent past point immediately on creation (the run_immediately flag has no effect once a
    # start_date is set)
    from airflow.timetables.trigger import CronTriggerTimetable

    info = CronTriggerTimetable("0 2 * * *", timezone="UTC", run_immediately=False).next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=START, latest=None, catchup=False))
    assert info.run_after <= pendulum.now("UTC")


def test_catchup_keeps_airflow_s_behaviour():
    assert first_run("2026-11-30T14:00:00+00:00", "2026-11-23T02:00:00+00:00", catchup=True) == "2026-11-24T02:00:00+00:00"


def test_only_cron_schedules_are_wrapped():
    assert timetable_for(None) is None and timetable_for("@once") == "@once"
    assert isinstance(timetable_for("@daily"), RehearsalTimetable)
