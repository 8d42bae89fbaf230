"""A step that fails is on record: compliance reads a run's outcome from the audit store, and a run
whose ``plan`` failed (or whose execute task lost its connection before any migration started)
left no event saying so, so it read as "recorded" with "No migration was applied".

``record_failure`` writes one ``task_failed`` event with the error, whichever step failed (validate,
approve, plan, execute, verify) and whether or not the run was opened: a run whose specs do not load
still names its environment, whose policy says where events go. Recording never hides the error
itself: when the store cannot take the event the caller's exception still propagates (logged here).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from polymigrate.commands.context import LOG, Run, Who, audit_sink, event
from polymigrate.commands.project import environment_of
from polymigrate.spec import load_project

ERROR_CAP = 4000  # a whole stack of lint findings stays readable in one audit row


def failure_details(error: BaseException, *, retryable: bool) -> dict[str, Any]:
    """What the event says: the message people read in the task's log, its type, and whether Airflow
    retries it (a transient error: a later ``task_retried`` of the same task supersedes this one)."""
    text = str(error).strip() or type(error).__name__
    if len(text) > ERROR_CAP:
        text = text[:ERROR_CAP] + f" … ({len(text) - ERROR_CAP} more characters in the task's log)"
    return {"error": text, "error_type": type(error).__name__, "retryable": retryable}


def record_failure(run: Run | None, error: BaseException, *, retryable: bool = False, region: str | None = None,
                   technology: str | None = None, root: Any = None, domain: str = "", environment: str = "",
                   who: Who | None = None, audit: Callable[[], Any] | None = None,
                   log: logging.Logger = LOG, once: bool = False) -> bool:
    """Record ``task_failed`` for the step that raised ``error``; True when it reached the sink.

    With ``run`` (the step opened it) the event goes to its sink. Without one (the step failed while
    opening it: specs that do not load, a param refused) the environment's policy is read again and
    its sink opened just for this event; ``audit`` resolves the store's connection as ``open_run``'s does.
    ``once``: nothing is recorded when the store already holds a ``task_failed`` of the same try (Airflow
    may run a failure callback twice for one lost try: its heartbeat timeout, then the executor's report).
    """
    details = failure_details(error, retryable=retryable)
    try:
        if run is not None:
            run.emit("task_failed", region=region, technology=technology, details=details)
            return True
        if who is None or audit is None:
            return False
        project = load_project(root)
        env = environment_of(project, environment, root)
        sink = audit_sink(env.policy, audit())
        try:
            query = getattr(sink, "query", None)
            if once and query is not None and any(
                    r.event.task_id == who.task_id and r.event.try_number == who.try_number
                    for r in query(domain=domain, environment=env.name, run_id=who.run_id, kind="task_failed")):
                return False
            sink.emit(event(who, domain, env.name, "task_failed", region=region, technology=technology,
                            details=details))
        finally:
            close = getattr(sink, "close", None)
            if callable(close):
                close()
        return True
    except Exception as exc:  # the task's own error is what the operator must see; this one goes to the log
        log.warning("could not record this failure in the audit store: %s", exc)
        return False
