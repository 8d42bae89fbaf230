"""What to tell whom: the core decides every notification, the Airflow layer only delivers it
(``polymigrate_airflow.notify`` through Airflow's notifiers), so the rules are the same for every
executor and unit-tested without Airflow.

Routes come from the specs (docs/observability.md): a domain's ``owners:`` and ``notify:`` (more
addresses, webhook connection ids, which events), plus its environment's ``notify:`` (e.g.
production's on-call), each route filtered by its ``events``. Only connection ids are in the specs:
the webhook URLs and SMTP credentials are secrets and live in Airflow connections.

A failure is told once per run and task, on its final try: a transient error Airflow retries tells
nobody yet (the retry may well succeed), so on-call is not paged three times for one incident.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, get_args

from polymigrate.spec.models import Domain, Environment, Notify, NotifyEvent

EVENTS: tuple[str, ...] = get_args(NotifyEvent)
TEXT_CAP = 3000  # a webhook message (Slack caps a text block at 3000 characters) and a readable e-mail
DEFAULT_SMTP = "smtp_default"  # Airflow's own default SMTP connection id

TITLES = {
    "run_failed": "migration failed",
    "rehearsal_failed": "nightly rehearsal failed",
    "verify_failed": "verify failed",
    "approval_requested": "approval requested",
    "production_completed": "completed",
    "override_used": "emergency override used",
    "drift_found": "drift found",
    "recovered": "recovered",
}
# the failures whose telling is recorded (``notified`` audit events): the run's recovery is told only after one
FAILURE_EVENTS = ("run_failed", "rehearsal_failed", "verify_failed")


@dataclass(frozen=True)
class Message:
    """One notification: one e-mail to ``emails`` and one post to each of ``webhooks``."""

    event: str
    domain: str
    environment: str
    subject: str
    text: str
    emails: tuple[str, ...] = ()
    webhooks: tuple[str, ...] = ()
    smtp_conn_id: str = DEFAULT_SMTP
    region: str | None = None
    technology: str | None = None
    link: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _wants(route: Notify, event: str) -> bool:
    return route.events is None or event in route.events


def routes(domain: Domain, env: Environment, event: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(e-mail addresses, webhook connection ids) for ``event`` of ``domain`` in ``env``, each once,
    in the order the specs name them: the owners (unless the environment turns them off), the
    domain's own route, then the environment's."""
    emails: list[str] = []
    hooks: list[str] = []
    if _wants(domain.notify, event):
        if env.notify.owners:
            emails += domain.owners
        emails += domain.notify.email
        hooks += domain.notify.webhooks
    if _wants(env.notify, event):
        emails += env.notify.email
        hooks += env.notify.webhooks
    return tuple(dict.fromkeys(emails)), tuple(dict.fromkeys(hooks))


def compose(event: str, domain: Domain, env: Environment, *, lines: list[str], region: str | None = None,
            technology: str | None = None, link: str | None = None, facts: dict[str, Any] | None = None
            ) -> Message | None:
    """The message of ``event``, or None when no route wants it (nothing to deliver)."""
    if event not in EVENTS:
        raise ValueError(f"unknown notification event {event!r}; one of {EVENTS}")
    emails, hooks = routes(domain, env, event)
    if not emails and not hooks:
        return None
    where = "/".join(p for p in (env.name, region, technology) if p)
    subject = f"[polymigrate] {domain.name} {where}: {TITLES[event]}"
    body = [subject.removeprefix("[polymigrate] "), *lines]
    if link:
        body.append(f"Link: {link}")
    text = "\n".join(body)
    if len(text) > TEXT_CAP:
        text = text[:TEXT_CAP] + "\n… (the rest is in the task's log)"
    return Message(event, domain.name, env.name, subject, text, emails, hooks,
                   env.notify.smtp_conn_id or DEFAULT_SMTP, region, technology, link, dict(facts or {}))


def is_final_try(*, retryable: bool, try_number: int | None, max_tries: int | None) -> bool:
    """Whether this failure ends the task: Airflow retries while ``try_number <= max_tries``
    (``TaskInstance.is_eligible_to_retry``), and a permanent error never retries."""
    if not retryable:
        return True
    return (try_number or 1) > (max_tries or 0)


def failure_message(domain: Domain, env: Environment, *, step: str, error: str, retryable: bool,
                    try_number: int | None, max_tries: int | None, run_type: str | None = None,
                    region: str | None = None, technology: str | None = None, link: str | None = None,
                    run_id: str | None = None) -> Message | None:
    """The failure of ``step`` (validate, approve, plan, execute, verify, drift) as one message on its
    final try; None before (another try comes) or when nobody is routed. The error text already names
    the file, the statement and the fix (``MigrationError``'s message), so it is quoted whole."""
    if not is_final_try(retryable=retryable, try_number=try_number, max_tries=max_tries):
        return None
    event = ("verify_failed" if step.startswith("verify") else
             "rehearsal_failed" if run_type == "scheduled" else "run_failed")
    lines = [f"Step: {step}" + (f" (try {try_number})" if try_number else ""),
             f"Domain: {domain.name}  Environment: {env.name}" + (f"  Region: {region}" if region else "")
             + (f"  Technology: {technology}" if technology else "")]
    if run_id:
        lines.append(f"Run: {run_id}")
    lines += ["", error.strip(), ""]
    return compose(event, domain, env, lines=lines, region=region, technology=technology, link=link,
                   facts={"step": step, "try_number": try_number, "run_id": run_id, "run_type": run_type})


def completed_message(domain: Domain, env: Environment, *, region: str, versions: dict[str, str | None],
                      link: str | None = None, run_id: str | None = None) -> Message | None:
    """A region verified in an environment promoted from another (production): its owners and
    on-call learn the release is live there, at which version per technology (verify's result).
    Rehearsals and development runs tell nobody."""
    if not env.policy.promotion_from:
        return None
    now = ", ".join(f"{tech} {version or '-'}" for tech, version in versions.items())
    lines = [f"Region {region} verified" + (f" (run {run_id})" if run_id else ""),
             f"Now at: {now or 'nothing to migrate'}"]
    return compose("production_completed", domain, env, lines=lines, region=region, link=link,
                   facts={"versions": dict(versions), "run_id": run_id})


def verify_warned_message(domain: Domain, env: Environment, *, region: str, failed: int, checks: int,
                          link: str | None = None, run_id: str | None = None) -> Message | None:
    """Checks that failed where the policy only warns (``verify_failures: warn``): the region went on,
    and its people learn what to look at (a failing verify fails its task and is told as a failure)."""
    lines = [f"{failed} of {checks} check(s) failed in {region}; the policy of {env.name} warns instead of failing.",
             "The verify task's log and the audit page list each one."]
    return compose("verify_failed", domain, env, lines=lines, region=region, link=link,
                   facts={"failed": failed, "checks": checks, "run_id": run_id})


def drift_message(domain: Domain, env: Environment, *, result: dict[str, Any],
                  link: str | None = None) -> Message | None:
    """The nightly drift report, only when something drifted (a quiet night tells nobody)."""
    count = int(result.get("count") or 0)
    if not count:
        return None
    lines = [f"{count} difference(s) from the last verified snapshot:"]
    for label, target in sorted((result.get("targets") or {}).items()):
        if target.get("differences"):
            lines.append(f"  {label}: {target['differences']} difference(s)")
    lines.append("The audit page lists each one; the next approval shows them too.")
    return compose("drift_found", domain, env, lines=lines, link=link, facts={"count": count})


def approval_message(domain: Domain, env: Environment, *, summary: str, link: str | None = None,
                     run_id: str | None = None) -> Message | None:
    """An approval waits: those routed for the domain learn it with the summary and the link."""
    lines = [f"Run {run_id} waits for approval." if run_id else "A run waits for approval.", "", summary.strip()]
    return compose("approval_requested", domain, env, lines=lines, link=link, facts={"run_id": run_id})


def recovery_due(records: list[Any], task_id: str | None) -> dict[str, Any] | None:
    """The failure of ``task_id`` this run told its routes, when the run has not told its recovery yet;
    None otherwise. ``records``: this run's ``notified`` audit events (``AuditRecord`` or ``AuditEvent``),
    oldest first. One recovery per run, however many tasks or tries failed and then succeeded."""
    events = [getattr(r, "event", r) for r in records]
    if any((e.details or {}).get("event") == "recovered" for e in events):
        return None
    told = [e for e in events if e.task_id == task_id and (e.details or {}).get("event") in FAILURE_EVENTS]
    return dict(told[-1].details or {}, try_number=told[-1].try_number) if told else None


def recovered_message(domain: Domain, env: Environment, *, step: str, failure: dict[str, Any], try_number: int | None,
                      region: str | None = None, technology: str | None = None, link: str | None = None,
                      run_id: str | None = None) -> Message | None:
    """A task whose failure was told (``failure``: what ``recovery_due`` found) succeeded on a later try
    of the same run (a retry, or a clear after a fix): the same routes learn it needs nobody now."""
    lines = [f"Step: {step} succeeded on try {try_number}" + (f" (it failed on try {failure.get('try_number')}"
                                                              f" and {failure.get('event', 'run_failed')} was sent)"
                                                              if failure.get("try_number") else ""),
             f"Domain: {domain.name}  Environment: {env.name}" + (f"  Region: {region}" if region else "")
             + (f"  Technology: {technology}" if technology else "")]
    if run_id:
        lines.append(f"Run: {run_id}")
    return compose("recovered", domain, env, lines=lines, region=region, technology=technology, link=link,
                   facts={"step": step, "try_number": try_number, "run_id": run_id,
                          "failed_try": failure.get("try_number")})
