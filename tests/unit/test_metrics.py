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
