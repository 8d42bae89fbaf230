"""What leaves a polymigrate task besides its result (docs/observability.md): metrics through Airflow's
``Stats`` and notifications through Airflow's notifiers (``polymigrate_airflow.notify``). The core
decides both (``polymigrate.metrics``, ``polymigrate.notify``); this module sends them.

Nothing here may fail a migration: every send is wrapped and only logged when it fails.
"""

from __future__ import annotations

from typing import Any

from polymigrate_airflow import notify


def _stats():
    """Airflow's task-process Stats, set up as ``[metrics]`` says. A worker's task runner initialises
    it in ``main()``; ``dag.test()`` runs tasks in-process without that, so it is initialised here the
    same way (the same factory, from the same configuration) when nobody did."""
    from airflow.sdk._shared.observability.metrics import stats as module
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability.metrics.stats_utils import get_stats_factory

    if getattr(module, "_factory", None) is None:
        module.initialize(factory=get_stats_factory(),
                          export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True))
    return module.Stats


def emit(metrics: list[Any], log: Any) -> None:
    """Send ``polymigrate.metrics.Metric``s; a metric that cannot be sent is logged, never raised."""
    if not metrics:
        return
    try:
        stats = _stats()
        for m in metrics:
            if m.kind == "timer":
                stats.timing(m.name, float(m.value), tags=m.tags)
            elif m.kind == "counter":
                stats.incr(m.name, count=int(m.value), tags=m.tags)
            else:
                stats.gauge(m.name, m.value, tags=m.tags)
    except Exception as exc:
        log.warning("metrics not sent: %s", exc)


def _names(op: Any) -> tuple[str, str, str | None, str | None]:
    return op.domain, op.environment, getattr(op, "region", None), getattr(op, "technology", None)


def _step(op: Any) -> str:
    # execute tasks are named after their technology (p1.postgresql); the others after their step
    return "execute" if getattr(op, "technology", None) else str(getattr(op, "task_id", "task")).rsplit(".", 1)[-1]


def _undelivered(op: Any, outcome: dict[str, Any] | None, event: str) -> None:
    from polymigrate import metrics

    if outcome and outcome.get("undelivered"):
        emit(metrics.undelivered(op.domain, op.environment, event, len(outcome["undelivered"])), op.log)


def failure(op: Any, context: Any, error: BaseException, *, retryable: bool, who: Any) -> None:
    """A failed try: counted (``final`` says whether Airflow retries it), and told on the final try."""
    from polymigrate import metrics
    from polymigrate.notify import is_final_try

    try:
        ti = context.get("ti")
        max_tries = getattr(ti, "max_tries", None)
        final = is_final_try(retryable=retryable, try_number=getattr(ti, "try_number", None),
                             max_tries=getattr(op, "retries", 0) if max_tries is None else max_tries)
        domain, env, region, tech = _names(op)
        step = _step(op)
        out = metrics.failed(domain, env, region, tech, step, final=final)
        if step == "verify" and final and region:
            out += metrics.verified(domain, env, region, None, error=True)
        emit(out, op.log)
    except Exception as exc:
        op.log.warning("failure metrics not sent: %s", exc)
    _undelivered(op, notify.failure(op, context, error, retryable=retryable, who=who, step=_step(op)), "run_failed")


def retried(op: Any) -> None:
    """A task's second or later try (a retry or a clear)."""
    from polymigrate import metrics

    emit(metrics.retried(*_names(op), _step(op)), op.log)


def migrated(op: Any, result: Any) -> None:
    """An execute task that succeeded: each file's duration and count, and how long the lock took; what
    its files changed, for OpenLineage (read only when lineage is on); its run's recovery, when told."""
    from polymigrate import metrics
    from polymigrate_airflow import lineage

    domain, env, region, tech = _names(op)
    emit(metrics.migrated(domain, env, region, tech, getattr(op, "phase", None), list(result.applied),
                          getattr(result, "lock_wait_ms", 0), dry_run=bool(result.dry_run),
                          details=getattr(result, "details", None)), op.log)
    if getattr(op, "_run", None) is not None:
        op._lineage = lineage.collect(op._run, op.region, op.technology, result)
    _undelivered(op, notify.recovered(op, None, step="execute"), "recovered")


def verified(op: Any, context: Any, result: dict[str, Any]) -> dict[str, Any]:
    """After a region verified: its outcome as metrics; a check that failed under ``verify_failures:
    warn`` tells its routes (verify_failed); a release live in a promoted environment tells them too
    (production_completed). Returns ``result`` unchanged."""
    from polymigrate import metrics
    from polymigrate.notify import completed_message, verify_warned_message

    if result.get("dry_run") or result.get("phase"):  # nothing applied, or contract still to come
        return result
    emit(metrics.verified(op.domain, op.environment, op.region, result), op.log)
    link, run_id = getattr(context.get("ti"), "log_url", None), context.get("run_id")
    _undelivered(op, notify.recovered(op, context, step="verify"), "recovered")
    if result.get("failed"):
        _undelivered(op, notify.send(op, context, lambda domain, env: verify_warned_message(
            domain, env, region=op.region, failed=int(result["failed"]), checks=int(result.get("checks") or 0),
            link=link, run_id=run_id)), "verify_failed")
    _undelivered(op, notify.send(op, context, lambda domain, env: completed_message(
        domain, env, region=op.region, versions=dict(result.get("versions") or {}), link=link, run_id=run_id)),
        "production_completed")
    return result


def drifted(op: Any, context: Any, result: dict[str, Any]) -> dict[str, Any]:
    """After the nightly drift comparison: the count as a gauge, and what drifted told (drift_found)."""
    from polymigrate import metrics
    from polymigrate.notify import drift_message

    emit(metrics.drifted(op.domain, op.environment, int(result.get("count") or 0)), op.log)
    _undelivered(op, notify.send(op, context, lambda domain, env: drift_message(
        domain, env, result=result, link=getattr(context.get("ti"), "log_url", None))), "drift_found")
    return result


def approval_requested(op: Any, context: Any, summary: str) -> None:
    """An approval now waits in Airflow's Required Actions: its routes get the summary and the link
    to the approve task, where the answer is given."""
    from polymigrate.notify import approval_message

    _undelivered(op, notify.send(op, context, lambda domain, env: approval_message(
        domain, env, summary=summary or "", link=getattr(context.get("ti"), "log_url", None),
        run_id=context.get("run_id"))), "approval_requested")
