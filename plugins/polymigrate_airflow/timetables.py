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

GRACE = timedelta(minutes=5)          # a point this recent is "now", not a missed run
LATE_GRACE_MAX = timedelta(hours=1)   # how late a run the scheduler missed while it was down may start


class RehearsalTimetable(CronTriggerTimetable):
    """``CronTriggerTimetable`` that never starts a missed run when a DAG is created or unpaused.

    - A new DAG runs the most recent point only if it passed less than 5 minutes ago; otherwise
      its first run is the next point.
    - A DAG with runs runs the point after its last run. If that point is already past (the
      scheduler was down at 02:00, or the DAG was paused), it runs late only when it is the most
      recent point and passed within 10% of the period (at least 5 minutes, at most an hour);
      otherwise it waits for the next point. A DAG paused over 02:00 and unpaused mid-day waits
      for tonight.
    """

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
        if last_automated_data_interval is None:
            start = previous if now - previous <= GRACE else following
        else:
            due = self._get_next(last_automated_data_interval.end)
            late = min(max((following - previous) / 10, GRACE), LATE_GRACE_MAX) if following > previous else GRACE
            if due >= now or (due == previous and now - previous <= late):
                start = due
            else:
                start = following
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
