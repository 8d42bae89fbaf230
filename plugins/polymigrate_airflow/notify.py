"""Delivers the core's notifications (``polymigrate.notify``) through Airflow's own notifiers:
``SmtpNotifier`` (smtp provider) for e-mail and ``SlackWebhookNotifier`` (slack provider) for each
webhook connection. Their secrets (SMTP password, webhook URL) stay in Airflow connections or the
secrets backend; the specs name only connection ids.

Delivery never fails a migration: a route that cannot be reached is logged and recorded in the audit
store as a ``notification_failed`` event, and the task goes on (or fails) for its own reasons.
"""

from __future__ import annotations

import html
from typing import Any, Callable

from polymigrate.notify import Message

WEBHOOK_TIMEOUT = 10  # seconds: a hung receiver must not hold a worker slot for long


def _email(message: Message) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk.configuration import conf

    # no Jinja: the error text may contain '{{' (a Lua table, a JSON body); notify() sends as given
    notifier = SmtpNotifier(to=list(message.emails), subject=message.subject, smtp_conn_id=message.smtp_conn_id,
                            from_email=conf.get("email", "from_email", fallback=None) or None,
                            html_content=f"<pre>{html.escape(message.text)}</pre>")
    notifier.notify({})


def _webhook(message: Message, conn_id: str) -> None:
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    SlackWebhookNotifier(slack_webhook_conn_id=conn_id, text=message.text, timeout=WEBHOOK_TIMEOUT).notify({})


def deliver(message: Message, *, log: Any, record: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Send ``message`` on every route; never raises. Returns what was delivered and what was not;
    each undelivered route is logged and passed to ``record`` (the audit store)."""
    routes: list[tuple[str, Callable[[], None]]] = []
    if message.emails:
        routes.append((f"email:{','.join(message.emails)}", lambda: _email(message)))
    for conn_id in message.webhooks:
        routes.append((f"webhook:{conn_id}", lambda c=conn_id: _webhook(message, c)))
    delivered, undelivered = [], []
    for route, send in routes:
        try:
            send()
            delivered.append(route)
        except Exception as exc:  # any failure of any route: the migration's outcome must not depend on it
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.warning("notification %s not delivered to %s: %s", message.event, route, error)
            undelivered.append({"route": route, "error": error})
    if delivered:
        log.info("notification %s sent to %s", message.event, ", ".join(delivered))
    if undelivered and record is not None:
        try:
            record({"event": message.event, "subject": message.subject, "undelivered": undelivered,
                    "delivered": delivered})
        except Exception as exc:
            log.warning("could not record the undelivered notification in the audit store: %s", exc)
    return {"delivered": delivered, "undelivered": undelivered}


def send(op: Any, context: Any, build: Callable[[Any, Any], Message | None], *, who: Any = None
         ) -> dict[str, Any] | None:
    """Build a message from the operator's run (its domain and environment) and deliver it; the
    ``notification_failed`` event goes through the run's audit sink (or one opened for it, as ``who``,
    when the run did not open). Never raises."""
    try:
        run = getattr(op, "_run", None)
        if run is not None:
            domain, env = run.domain, run.environment
        else:  # the run did not open (specs or params refused): the routes may still load
            from polymigrate.spec import load_project

            project = load_project(op.specs_root)
            domain, env = project.domains.get(op.domain), project.environments.get(op.environment)
            if domain is None or env is None:
                op.log.warning("no notification: %s/%s did not load", op.domain, op.environment)
                return None
        message = build(domain, env)
        if message is None:
            return None
        outcome = deliver(message, log=op.log, record=lambda details: _record(op, who, run, message, details))
        _told(op, run, message, outcome)
        return outcome
    except Exception as exc:
        op.log.warning("notification not sent: %s", exc)
        return None


def _told(op: Any, run: Any, message: Message, outcome: dict[str, Any]) -> None:
    """A failure or a recovery told is on record (``notified``): a later try of the same run tells its
    recovery only after a told failure, and only once (``polymigrate.notify.recovery_due``)."""
    from polymigrate.notify import FAILURE_EVENTS

    if run is None or message.event not in (*FAILURE_EVENTS, "recovered"):
        return
    try:
        run.emit("notified", region=message.region, technology=message.technology,
                 details={"event": message.event, "delivered": outcome["delivered"],
                          "undelivered": [u["route"] for u in outcome["undelivered"]]})
    except Exception as exc:
        op.log.warning("could not record the notification in the audit store: %s", exc)


def recovered(op: Any, context: Any, *, step: str) -> dict[str, Any] | None:
    """A task that succeeded on a later try: when this run told its failure, tell its recovery (once
    per run). Needs the audit store, where the told failure is recorded; never raises."""
    from polymigrate.commands.drift import store_of
    from polymigrate.notify import recovered_message, recovery_due

    run = getattr(op, "_run", None)
    if run is None or (run.who.try_number or 1) <= 1 or store_of(run.sink) is None:
        return None  # a first try recovers nothing: no audit query on the common path
    try:
        failure = recovery_due(store_of(run.sink).query(run_id=run.who.run_id, kind="notified"), run.who.task_id)
    except Exception as exc:
        op.log.warning("recovery not checked: %s", exc)
        return None
    if failure is None:
        return None
    link = getattr((context or {}).get("ti"), "log_url", None)
    return send(op, context, lambda domain, env: recovered_message(
        domain, env, step=step, failure=failure, try_number=run.who.try_number, region=getattr(op, "region", None),
        technology=getattr(op, "technology", None), link=link, run_id=run.who.run_id), who=run.who)


def _record(op: Any, who: Any, run: Any, message: Message, details: dict[str, Any]) -> None:
    if run is not None:
        run.emit("notification_failed", region=message.region, technology=message.technology, details=details)
        return
    from polymigrate.commands.context import audit_sink, event
    from polymigrate.commands.project import environment_of
    from polymigrate.spec import load_project
    from polymigrate_airflow.connections import audit_conninfo

    if who is None:
        raise RuntimeError("the run did not open and no one to record the event as")
    env = environment_of(load_project(op.specs_root), op.environment, op.specs_root)
    sink = audit_sink(env.policy, audit_conninfo())
    try:
        sink.emit(event(who, op.domain, env.name, "notification_failed", region=message.region,
                        technology=message.technology, details=details))
    finally:
        close = getattr(sink, "close", None)
        if callable(close):
            close()


def failure(op: Any, context: Any, error: BaseException, *, retryable: bool, who: Any, step: str
            ) -> dict[str, Any] | None:
    """The failed task's notification, on its final try only (``polymigrate.notify.failure_message``);
    ``who``: the operators' ``who(context)`` (the run type tells a nightly rehearsal)."""
    from polymigrate.notify import failure_message

    ti = context.get("ti")
    link = getattr(ti, "log_url", None)
    max_tries = getattr(ti, "max_tries", None)
    if max_tries is None:
        max_tries = getattr(op, "retries", 0)
    return send(op, context, lambda domain, env: failure_message(
        domain, env, step=step, error=str(error) or type(error).__name__, retryable=retryable,
        try_number=getattr(ti, "try_number", None), max_tries=max_tries, run_type=getattr(who, "run_type", None),
        region=getattr(op, "region", None), technology=getattr(op, "technology", None), link=link,
        run_id=context.get("run_id")), who=who)

