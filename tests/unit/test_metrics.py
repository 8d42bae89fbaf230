"""The metrics each step produces (polymigrate.metrics): fixed names, the same tag set per name, and
docs/observability.md listing every one of them with its tags."""

from pathlib import Path

import pytest

from polymigrate import metrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def test_an_execute_task_measures_each_file_and_the_lock_wait():
    out = metrics.migrated("shop", "production", "eu", "postgresql", None,
                           [{"version": "1", "ms": 12}, {"version": "2", "ms": 30}], 250)
    assert [(m.kind, m.name, m.value) for m in out] == [
        ("timer", "polymigrate.lock.wait", 250),
        ("timer", "polymigrate.migration.duration", 12), ("counter", "polymigrate.migration.applied", 1),
        ("timer", "polymigrate.migration.duration", 30), ("counter", "polymigrate.migration.applied", 1)]
    assert out[1].tags == {"domain": "shop", "environment": "production", "region": "eu",
                           "technology": "postgresql", "phase": "all"}
    assert metrics.migrated("shop", "production", "eu", "postgresql", "expand", [{"ms": 1}], 0)[1].tags["phase"] == "expand"
    assert metrics.migrated("shop", "production", "eu", "postgresql", None, [{"ms": 1}], 0, dry_run=True) == []


def test_failures_retries_verify_and_drift():
    m, = metrics.failed("shop", "production", None, None, "plan", final=False)
    assert m.tags == {"domain": "shop", "environment": "production", "region": "none", "technology": "none", "step": "plan",
                      "final": "false"}
    assert metrics.retried("shop", "production", "eu", "redis", "execute")[0].name == "polymigrate.task.retried"
    assert [m.tags["outcome"] for m in (metrics.verified("s", "p", "eu", {"failed": 0})[0],
                                        metrics.verified("s", "p", "eu", {"failed": 2})[0],
                                        metrics.verified("s", "p", "eu", None, error=True)[0])] == \
        ["passed", "warned", "failed"]
    assert metrics.drifted("s", "p", 3)[0].value == 3


def test_a_metric_with_other_tags_is_refused():
    with pytest.raises(ValueError, match="takes the tags"):
        metrics._metric("polymigrate.drift.differences", 1, domain="s")


def test_docs_list_every_metric_with_its_tags():
    text = DOCS.read_text(encoding="utf-8")
    for name, (kind, unit, tags) in metrics.METRICS.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        assert row is not None, f"{name} is not documented in docs/observability.md"
        assert kind in row and all(f"`{t}`" in row for t in tags), row


def test_files_that_move_data_report_their_throughput_and_redis_its_longest_call():
    def of(technology, details, ms=2000):
        return [(m.name, m.value, m.tags.get("operation")) for m in
                metrics.migrated("s", "p", "eu", technology, None, [{"script": "f", "ms": ms}], 0, details={"f": details})
                if m.name in ("polymigrate.migration.throughput", "polymigrate.redis.longest_call")]

    assert of("postgresql", {"backfill": {"rows_changed": 5000}}) == [("polymigrate.migration.throughput", 2500.0, "backfill")]
    assert of("mongodb", {"transforms": {"a": {"processed": 300}, "b": {"processed": 100}}}) == [
        ("polymigrate.migration.throughput", 200.0, "transform")]
    # a reindex's rate is over the server's own task time, not the file's (which waits on polls)
    assert of("elasticsearch", {"reindexed": {"documents": 1000, "ms": 500}}) == [
        ("polymigrate.migration.throughput", 2000.0, "reindex")]
    assert of("redis", {"processed": 40, "batches": 2, "longest_call_ms": 7}) == [
        ("polymigrate.migration.throughput", 20.0, "batched_script"), ("polymigrate.redis.longest_call", 7, None)]
    assert of("postgresql", {"transactional": True}) == []  # DDL moves no data: no throughput
    assert of("elasticsearch", {"steps": 1, "reindexed": {"documents": 0, "ms": 0}}) == []
