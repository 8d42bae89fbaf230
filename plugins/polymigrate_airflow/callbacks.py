"""A task that dies without raising still leaves its ``task_failed`` audit event.

A task whose worker is killed outright (SIGKILL, the out-of-memory killer, a lost machine) never
reaches the operator's own failure handling (``PolymigrateMixin.guarded``). In Airflow 3.3 the
scheduler finds it without a heartbeat after ``[scheduler] task_instance_heartbeat_timeout``, fails it
(or sets it up for retry) and sends a ``TaskCallbackRequest`` that the DAG processor runs: the task's
``on_failure_callback`` (``on_retry_callback`` when a try is left), with the task as the DAG file
defines it and a context built from the server's record of the try. These two functions are those
callbacks (set on every task by the renderer's ``default_args``).

A lost try on record is also counted and, on the task's last try, told to its routes (``run_failed``),
as a failure the operator raised is.

In the worker, the same callbacks run after every ordinary failure too, where the operator has
already recorded the failure with its real error: the task says so and nothing is recorded twice.
Airflow 3.3 may also run them twice for one lost try (the heartbeat timeout sends a callback
request, then the executor's report of the failed try another): a try already on record in the
audit store is not recorded again.
"""

from __future__ import annotations

from typing import Any


class WorkerLost(Exception):
    """The try ended without an outcome from the task itself (its ``error_type`` in the event)."""


LOST = ("the task's worker stopped before the task reported an outcome (killed, out of memory or its machine lost); "
        "Airflow failed the try after its heartbeat timeout. Whatever the try applied is in the ledger: "
        "clear the task to resume (it re-reads the ledger under the target's lock)")


def _record(context: dict[str, Any], *, retryable: bool) -> bool:
    """Record the lost try once; True when this call recorded it."""
    from polymigrate.commands.failures import record_failure
    from polymigrate_airflow.connections import audit_conninfo
    from polymigrate_airflow.operators import PolymigrateMixin
    from polymigrate_airflow.task_context import who

    ti = context.get("ti")
    task = getattr(ti, "task", None) or context.get("task")
    if not isinstance(task, PolymigrateMixin) or getattr(task, "failure_recorded", False):
        return False  # not ours, or the operator recorded this failure with its own error
    log = getattr(task, "log", None)
    error = WorkerLost(LOST)
    kwargs = {"log": log} if log is not None else {}
    by = who(context)
    recorded = record_failure(None, error, retryable=retryable, region=getattr(task, "region", None),
                              technology=getattr(task, "technology", None), root=task.specs_root, domain=task.domain,
                              environment=task.environment, who=by, audit=audit_conninfo, once=True, **kwargs)
    if recorded:
        # counted and told as the operator tells its own failures (run_failed on the last try only);
        # only when this call recorded the try, so a lost try called back twice is told once
        from polymigrate_airflow import observability

        observability.failure(task, context, error, retryable=retryable, who=by)
    return recorded


def on_failure(context: dict[str, Any]) -> None:
    """``on_failure_callback``: the try failed and no retry is left."""
    _record(context, retryable=False)


def on_retry(context: dict[str, Any]) -> None:
    """``on_retry_callback``: the try failed and Airflow will try again (a later ``task_retried``
    supersedes this failure, as for a transient error the operator raised)."""
    _record(context, retryable=True)
