"""Which metrics a step produces, as plain data: the Airflow layer sends them through Airflow's own
``Stats`` (StatsD, Datadog or OpenTelemetry, as ``[metrics]`` is configured), so they land beside
Airflow's own metrics with its prefix (``airflow.`` by default). Pure, so the names and tags are
unit-tested without Airflow, and docs/observability.md lists exactly these.

Tags are always strings and always the same set per name (Prometheus, behind statsd-exporter,
rejects a series whose label set changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PREFIX = "polymigrate"
NO_PHASE = "all"
NONE = "none"  # the tag value of a region or technology a step has none of (plan, validate)  # an execute task of a DAG without phases runs every phase's files of its technology

# name → (kind, unit, tags); the single list docs/observability.md documents (a unit test keeps them equal)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "polymigrate.migration.duration": ("timer", "ms", ("domain", "environment", "region", "technology", "phase")),
    "polymigrate.migration.applied": ("counter", "files", ("domain", "environment", "region", "technology", "phase")),
    "polymigrate.migration.failed": ("counter", "tasks", ("domain", "environment", "region", "technology", "step",
                                                          "final")),
    "polymigrate.task.retried": ("counter", "tries", ("domain", "environment", "region", "technology", "step")),
    "polymigrate.lock.wait": ("timer", "ms", ("domain", "environment", "region", "technology")),
    "polymigrate.migration.throughput": ("gauge", "items/s", ("domain", "environment", "region", "technology", "phase",
                                                               "operation")),
    "polymigrate.redis.longest_call": ("timer", "ms", ("domain", "environment", "region", "phase")),
    "polymigrate.verify.outcome": ("counter", "regions", ("domain", "environment", "region", "outcome")),
    "polymigrate.verify.failed_checks": ("gauge", "checks", ("domain", "environment", "region")),
    "polymigrate.drift.differences": ("gauge", "differences", ("domain", "environment")),
    "polymigrate.notification.undelivered": ("counter", "routes", ("domain", "environment", "event")),
}


@dataclass(frozen=True)
class Metric:
    kind: Literal["timer", "counter", "gauge"]
    name: str
    value: float
    tags: dict[str, str] = field(default_factory=dict)


def _metric(name: str, value: float, **tags: Any) -> Metric:
    kind, _, names = METRICS[name]
    if set(tags) != set(names):
        raise ValueError(f"{name} takes the tags {names}, not {sorted(tags)}")
    # "none", not "": an empty value reads as a missing tag to InfluxDB-style parsers (statsd-exporter)
    return Metric(kind, name, value, {k: NONE if v is None else str(v) for k, v in tags.items()})  # type: ignore[arg-type]


def migrated(domain: str, environment: str, region: str, technology: str, phase: str | None,
             applied: list[dict[str, Any]], lock_wait_ms: int | None, *, dry_run: bool = False,
             details: dict[str, dict[str, Any]] | None = None) -> list[Metric]:
    """An execute task that succeeded: each applied file's duration and count, and the lock wait;
    with the adapters' ``details`` (script -> ``Applied.details``) the throughput of the files that
    move data in batches and the longest Redis script call. A dry run applied nothing and measures nothing."""
    if dry_run:
        return []
    where = {"domain": domain, "environment": environment, "region": region, "technology": technology}
    out = [_metric("polymigrate.lock.wait", lock_wait_ms or 0, **where)]
    for a in applied:
        out.append(_metric("polymigrate.migration.duration", a.get("ms") or 0, **where, phase=phase or NO_PHASE))
        out.append(_metric("polymigrate.migration.applied", 1, **where, phase=phase or NO_PHASE))
        d = (details or {}).get(a.get("script")) or {}
        for operation, items, ms in throughput(technology, d, a.get("ms") or 0):
            out.append(_metric("polymigrate.migration.throughput", round(items * 1000 / ms, 1), **where,
                               phase=phase or NO_PHASE, operation=operation))
        if technology == "redis" and d.get("longest_call_ms") is not None:
            out.append(_metric("polymigrate.redis.longest_call", d["longest_call_ms"], domain=domain,
                               environment=environment, region=region, phase=phase or NO_PHASE))
    return out


def throughput(technology: str, details: dict[str, Any], ms: int) -> list[tuple[str, int, int]]:
    """(operation, items, ms) of a file that moved data: a PostgreSQL backfill's rows changed, a
    MongoDB transform's documents, an Elasticsearch reindex's documents (over the server's own time
    of its tasks), a batched Redis script's keys. Nothing for a file that moved nothing measurable."""
    if technology == "postgresql" and isinstance(details.get("backfill"), dict):
        rows, took = int(details["backfill"].get("rows_changed") or 0), ms
        return [("backfill", rows, took)] if rows and took else []
    if technology == "mongodb" and details.get("transforms"):
        docs = sum(int(t.get("processed") or 0) for t in details["transforms"].values())
        return [("transform", docs, ms)] if docs and ms else []
    if technology == "elasticsearch" and isinstance(details.get("reindexed"), dict):
        docs, took = int(details["reindexed"].get("documents") or 0), int(details["reindexed"].get("ms") or 0)
        return [("reindex", docs, took)] if docs and took else []
    if technology == "redis" and int(details.get("processed") or 0) and ms:
        return [("batched_script", int(details["processed"]), ms)]
    return []


def failed(domain: str, environment: str, region: str | None, technology: str | None, step: str,
           *, final: bool) -> list[Metric]:
    """A task failure: ``final`` false when Airflow retries it (the same incident counted per try)."""
    return [_metric("polymigrate.migration.failed", 1, domain=domain, environment=environment, region=region,
                    technology=technology, step=step, final=str(final).lower())]


def retried(domain: str, environment: str, region: str | None, technology: str | None, step: str) -> list[Metric]:
    return [_metric("polymigrate.task.retried", 1, domain=domain, environment=environment, region=region,
                    technology=technology, step=step)]


def verified(domain: str, environment: str, region: str, result: dict[str, Any] | None,
             *, error: bool = False) -> list[Metric]:
    """A verify task's outcome: passed, warned (checks failed where the policy only warns) or failed."""
    failed_checks = int((result or {}).get("failed") or 0)
    outcome = "failed" if error else "warned" if failed_checks else "passed"
    where = {"domain": domain, "environment": environment, "region": region}
    out = [_metric("polymigrate.verify.outcome", 1, **where, outcome=outcome)]
    if not error:
        out.append(_metric("polymigrate.verify.failed_checks", failed_checks, **where))
    return out


def drifted(domain: str, environment: str, count: int) -> list[Metric]:
    return [_metric("polymigrate.drift.differences", count, domain=domain, environment=environment)]


def undelivered(domain: str, environment: str, event: str, routes: int) -> list[Metric]:
    return [_metric("polymigrate.notification.undelivered", routes, domain=domain, environment=environment,
                    event=event)]
