"""The schedule of rehearsal environments: cron, never a surprise catch-up run.

With ``catchup=False`` Airflow's own cron timetables still start the most recent past cron point
as soon as a DAG is created unpaused or unpaused again: a nightly staging rehearsal fires at
mid-day, against whatever the databases hold then, while people work. This timetable runs a past
point only when it has just passed (the scheduler was down for a few minutes at 02:00); otherwise
the first run is the next scheduled time. Registered through the plugin (``timetables``) so the
scheduler can deserialize it.
"""

from __future__ import annotations

from datetime import timedelta

from airflow._shared.timezones.timezone import coerce_datetime, utcnow
from airflow.timetables.base import DagRunInfo
from airflow.timetables.trigger import CronTriggerTimetable

MIN_GRACE = timedelta(minutes=5)


class RehearsalTimetable(CronTriggerTimetable):
    """``CronTriggerTimetable`` whose first run, or first run after a pause, is never a missed one
    (past more than a grace of 10% of the period, at least 5 minutes)."""

    def __init__(self, cron: str, *, timezone="UTC", interval=timedelta(), run_immediately=False) -> None:
        super().__init__(cron, timezone=timezone, interval=interval, run_immediately=run_immediately)
        self.description = (self.description or self._expression) + "; never a catch-up run on creation or unpause"

    def now(self):
        return coerce_datetime(utcnow())

    def next_dagrun_info(self, *, last_automated_data_interval, restriction):
        if restriction.catchup:
            return super().next_dagrun_info(last_automated_data_interval=last_automated_data_interval,
                                            restriction=restriction)
        now = self.now()
        previous, following = self._align_to_prev(now), self._align_to_next(now)
        grace = max((following - previous) / 10, MIN_GRACE) if following > previous else MIN_GRACE
        start = previous if now - previous <= grace else following
        if last_automated_data_interval is not None:  # never the same point twice
            start = max(start, self._get_next(last_automated_data_interval.end))
        if restriction.earliest is not None:
            start = max(start, self._align_to_next(restriction.earliest))
        if restriction.latest is not None and restriction.latest < start:
            return None
        return DagRunInfo.interval(coerce_datetime(start - self._interval), start)


def timetable_for(schedule: str | None):
    """What the renderer passes as ``schedule``: cron expressions and presets get the rehearsal timetable."""
    if not schedule or schedule in ("@once", "@continuous"):
        return schedule
    return RehearsalTimetable(schedule, timezone="UTC")
