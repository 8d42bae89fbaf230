"""The rehearsal trend the audit page shows next to production's estimate (``polymigrate.audit.trend``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from polymigrate.audit.store import AuditRecord
from polymigrate.audit.trend import latest_estimates, rehearsal_trend
from polymigrate.events import AuditEvent

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)


class Events:
    def __init__(self):
        self.records: list[AuditRecord] = []

    def add(self, kind: str, env: str, *, domain: str = "shop", **kw) -> AuditRecord:
        n = len(self.records) + 1
        event = AuditEvent(kind=kind, domain=domain, environment=env, at=T0 + timedelta(hours=n), **kw)
        rec = AuditRecord(n, f"h{n}", event)
        self.records.append(rec)
        return rec

    def ran(self, env: str, script: str, ms: int, *, region: str = "s1", checksum: int = 1, **kw) -> None:
        self.add("migration_succeeded", env, region=region, technology="postgresql", script=script,
                 checksum=checksum, duration_ms=ms, **kw)

    def asked(self, env: str = "production", **kw) -> AuditRecord:
        return self.add("approval_requested", env, run_id=f"run{len(self.records)}", details={
            "changeset_hash": "x", "rehearsal": {"environment": "staging", "regions": {
                "p1": {"seconds": 4.2, "files": 2, "never_rehearsed": [], "slowest": []}}}}, **kw)


def test_each_file_shows_its_last_rehearsals_the_estimate_rule_and_production():
    ev = Events()
    for night, ms in enumerate([900, 1100, 1300, 1600, 2000, 2600, 3300]):  # a backfill growing with the data
        ev.ran("staging", "V7__backfill.sql", ms)
        ev.ran("staging", "V8__index.sql", 40 + night)
    ev.ran("staging", "V8__index.sql", 300, region="s2")          # the other staging region is slower
    ev.ran("development", "V7__backfill.sql", 99_999)             # not the rehearsal environment
    ev.ran("production", "V7__backfill.sql", 3100, region="p1")
    request = ev.asked()
    trend = rehearsal_trend(request, ev.records, last=5)
    assert (trend.environment, trend.rehearsal, trend.regions["p1"]["seconds"]) == ("production", "staging", 4.2)
    backfill, index = trend.files
    assert backfill.script == "V7__backfill.sql" and backfill.runs_ms == [1300, 1600, 2000, 2600, 3300]
    assert backfill.estimate_ms == 3300 and backfill.production_ms == 3100 and backfill.changed is False
    assert index.runs_ms[-1] == 300 and index.regions == ["s1", "s2"] and index.estimate_ms == 300
    assert index.production_ms is None


def test_a_changed_file_is_estimated_from_its_newest_version_only():
    ev = Events()
    ev.ran("staging", "V9__big.sql", 50_000, checksum=1)
    ev.ran("staging", "V9__big.sql", 700, checksum=2)  # fixed: batches now
    [f] = rehearsal_trend(ev.asked(), ev.records).files
    assert f.runs_ms == [50_000, 700] and f.changed and f.estimate_ms == 700


def test_the_latest_request_with_an_estimate_per_domain_and_environment():
    ev = Events()
    ev.asked()
    newer = ev.asked()
    ev.add("approval_requested", "production", details={"changeset_hash": "y"})  # no rehearsal environment
    other = ev.asked(domain="feed")
    assert [r.id for r in latest_estimates(ev.records)] == [other.id, newer.id]


def test_an_estimate_without_rehearsed_files_says_there_is_no_trend_yet_not_an_empty_table():
    from polymigrate_airflow.ui.page import render_page

    ev = Events()
    trend = rehearsal_trend(ev.asked(), ev.records)
    assert trend.files == []
    page = render_page(filters={}, technologies=[], rows=[], history=[], chart="", limit=500, trends=[trend])
    assert 'class="trend"' not in page and "No trend yet: no file of shop has run in staging" in page
