"""Approval policy, execution windows and the promotion gate: pure functions, no I/O.

``evaluate`` decides, from the environment's policy, the change set being approved and the
approvals given so far, whether a run may proceed (approved), must wait (waiting) or must stop
(refused). An approval only counts for the exact change-set hash the approver saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, time as dtime, timedelta
from typing import Iterable, Literal
from zoneinfo import ZoneInfo

from polymigrate.checksums import sha256
from polymigrate.ledger import LedgerEntry, Status
from polymigrate.plan import changeset_hash
from polymigrate.spec.models import SEVERITY_ORDER, ApprovalPolicy, Environment, Policy, Window

RISKS = ("low", "medium", "high", "critical")


def at_least(level: str, threshold: str) -> bool:
    """``level`` is at or above ``threshold`` on the severity scale (info < low < … < critical).
    A lint risk of ``unknown`` (a table lint --url could not find) fails closed: it counts as critical."""
    level = "critical" if level == "unknown" else level
    return SEVERITY_ORDER.index(level) >= SEVERITY_ORDER.index(threshold)


@dataclass(frozen=True)
class ChangeSet:
    """What an approver approves: bound to a hash of versions, checksums and lint waivers."""

    domain: str
    environment: str
    hash: str
    triggered_by: str
    risk: str = "low"
    destructive: bool = False
    destructive_waived: bool = False  # every destructive change carries a reasoned lint suppression
    blocking_findings: int = 0  # unsuppressed lint findings at or above the policy's threshold
    regulated: int = 0  # labelled data dropped, retyped or moved (docs/governance.md): compliance signs off too


@dataclass(frozen=True)
class Approval:
    user: str
    decision: Literal["approve", "reject"]
    changeset_hash: str
    at: datetime
    roles: frozenset[str] = frozenset()
    comment: str = ""


@dataclass
class Decision:
    status: Literal["approved", "waiting", "refused"]
    required: int
    approved_by: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)   # why refused, or what is still missing
    ignored: list[str] = field(default_factory=list)   # approvals that did not count, and why
    escalated: bool = False
    override: bool = False
    compliance_required: bool = False  # a regulated change where the policy names compliance_roles
    signed_off_by: list[str] = field(default_factory=list)  # holders of a compliance role who approved

    def to_dict(self) -> dict:
        return {"status": self.status, "required": self.required, "approved_by": self.approved_by,
                "reasons": self.reasons, "ignored": self.ignored, "escalated": self.escalated,
                "override": self.override,
                **({"compliance_required": True, "signed_off_by": self.signed_off_by}
                   if self.compliance_required else {})}


def required_approvals(policy: ApprovalPolicy, change: ChangeSet, *, override: bool = False) -> tuple[int, list[str], bool]:
    """(how many, which roles may give them, escalated?) for this change."""
    escalate = override or change.destructive or at_least(change.risk, "high")
    if escalate and (policy.high_risk_required is not None or policy.high_risk_roles):
        n = max(policy.required, policy.high_risk_required if policy.high_risk_required is not None else policy.required + 1)
        roles = policy.high_risk_roles or policy.roles
        return n, list(roles), True
    if override:  # no stricter level named: an override needs one more approval than usual
        return policy.required + 1, list(policy.roles), True
    return policy.required, list(policy.roles), escalate and policy.required > 0


def evaluate(policy: Policy, change: ChangeSet, approvals: Iterable[Approval], now: datetime, *,
             override: bool = False) -> Decision:
    """Approved, waiting or refused, with the reasons a person can act on."""
    ap = policy.approvals
    required, roles, escalated = required_approvals(ap, change, override=override)
    decision = Decision("waiting", required, escalated=escalated, override=override,
                        compliance_required=bool(change.regulated and ap.compliance_roles))

    # A reviewed contract step (its drop waived in the file with a reason) is a normal release step,
    # not an emergency: it passes, with the stricter approval that any destructive change needs.
    if change.destructive and not change.destructive_waived and not policy.destructive_allowed and not override:
        decision.status = "refused"
        decision.reasons.append(f"destructive changes are not allowed in {change.environment} unless each is waived "
                                "in its file with a reason (lint-ignore … reason: …), which then needs the stricter "
                                "approval; or use an emergency override, which needs it too and is recorded")
        return decision
    if change.blocking_findings and not override:
        decision.status = "refused"
        decision.reasons.append(f"{change.blocking_findings} lint finding(s) at or above '{policy.lint_block_at}' block "
                                f"{change.environment} (fix them, or suppress each with a reason)")
        return decision

    counted: list[str] = []
    for a in sorted(approvals, key=lambda a: a.at):
        who = a.user
        if a.changeset_hash != change.hash:
            decision.ignored.append(f"{who}: answered for change set {a.changeset_hash[:12]}, not {change.hash[:12]}")
            continue
        if ap.expiry_hours is not None and now - a.at > timedelta(hours=ap.expiry_hours):
            decision.ignored.append(f"{who}: expired ({ap.expiry_hours:g} h)")
            continue
        if a.decision == "reject":
            decision.status = "refused"
            decision.reasons.append(f"rejected by {who}" + (f": {a.comment}" if a.comment else ""))
            return decision
        if who == change.triggered_by and not ap.triggerer_may_approve:
            decision.ignored.append(f"{who}: triggered this run and may not approve it (four-eyes)")
            continue
        signs_off = decision.compliance_required and bool(set(ap.compliance_roles) & set(a.roles))
        if signs_off and who not in decision.signed_off_by:
            decision.signed_off_by.append(who)
        if signs_off and (roles or ap.users) and not (set(roles) & set(a.roles)) and who not in ap.users:
            continue  # the compliance sign-off, not one of the environment's approvals
        if roles or ap.users:
            if not (set(roles) & set(a.roles)) and who not in ap.users:
                decision.ignored.append(f"{who}: needs one of the roles {sorted(roles)}"
                                        + (f" (has {sorted(a.roles)})" if a.roles else ""))
                continue
        if who in counted:
            decision.ignored.append(f"{who}: already approved; N approvals need N distinct people")
            continue
        counted.append(who)

    decision.approved_by = counted
    signed = not decision.compliance_required or decision.signed_off_by
    if len(counted) >= required and signed:
        decision.status = "approved"
    if len(counted) < required:
        missing = required - len(counted)
        who = f" with role {' or '.join(sorted(roles))}" if roles else ""
        decision.reasons.append(f"needs {missing} more approval(s){who}"
                                + ("" if ap.triggerer_may_approve else f", not from {change.triggered_by}"))
    if not signed:
        decision.reasons.append(f"needs a compliance sign-off from a holder of role {' or '.join(ap.compliance_roles)}: "
                                f"the change set makes {change.regulated} regulated change(s) to labelled data")
    return decision


def bound_changeset_hash(domain: str, environment: Environment, migrations: list) -> str:
    """The hash an approval is bound to, recomputed by every task that acts on the approval.

    It covers every migration file's content (so in-file lint waivers too: ``lint-ignore``
    directives and ``lint_ignore`` keys live inside the files) and the placeholders of the
    environment and its regions, which change what the same file executes.
    """
    placeholders = {"": dict(environment.placeholders),
                    **{name: dict(r.placeholders) for name, r in environment.regions.items()}}
    files = changeset_hash(domain, environment.name, migrations)
    return sha256(json.dumps([files, placeholders], sort_keys=True, separators=(",", ":")))


def eligible_roles(policy: ApprovalPolicy, change: ChangeSet, *, override: bool = False) -> list[str]:
    """The roles whose holders may answer this request (empty: any role)."""
    return required_approvals(policy, change, override=override)[1]


# --- execution windows ------------------------------------------------------------------------

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _hm(text: str) -> dtime:
    h, m = text.split(":")
    return dtime(int(h), int(m))


def _window_bounds(window: Window, day: datetime) -> tuple[datetime, datetime]:
    """The window that starts on ``day`` (local), ending the next day when it crosses midnight."""
    start = datetime.combine(day.date(), _hm(window.start), tzinfo=day.tzinfo)
    end = datetime.combine(day.date(), _hm(window.end), tzinfo=day.tzinfo)
    if end <= start:
        end += timedelta(days=1)
    return start, end


def window_bounds_at(window: Window, now: datetime) -> tuple[datetime, datetime] | None:
    """(start, end) of the window that contains ``now``, or None when it is closed."""
    tz = ZoneInfo(window.timezone)
    local = now.astimezone(tz)
    for back in (0, 1):  # a window that began yesterday may still be open
        day = local - timedelta(days=back)
        if _DAYS[day.weekday()] not in window.days:
            continue
        start, end = _window_bounds(window, day)
        if start <= local < end:
            return start, end
    return None


def next_window_start(window: Window, now: datetime) -> datetime:
    """When the window next opens (``now`` itself when it is open)."""
    if window_bounds_at(window, now):
        return now
    tz = ZoneInfo(window.timezone)
    local = now.astimezone(tz)
    for ahead in range(0, 8):
        day = local + timedelta(days=ahead)
        if _DAYS[day.weekday()] not in window.days:
            continue
        start, _ = _window_bounds(window, day)
        if start > local:
            return start
    raise ValueError("the window never opens: it lists no day")


def may_start(window: Window | None, now: datetime, estimate_seconds: float | None = None) -> tuple[bool, str]:
    """May a migration start now, given the window and (when known) its estimated duration?"""
    if window is None:
        return True, "no execution window"
    bounds = window_bounds_at(window, now)
    if bounds is None:
        return False, f"window closed; opens {next_window_start(window, now).isoformat()}"
    if estimate_seconds is not None and now + timedelta(seconds=estimate_seconds) > bounds[1]:
        return False, (f"estimated {estimate_seconds:.0f}s would run past the window's end "
                       f"{bounds[1].isoformat()}; waits for the next window")
    return True, f"window open until {bounds[1].isoformat()}"


def window_seconds(window: Window) -> float:
    """How long one opening of the window lasts."""
    start = datetime.combine(datetime(2000, 1, 3).date(), _hm(window.start))
    end = datetime.combine(start.date(), _hm(window.end))
    if end <= start:
        end += timedelta(days=1)
    return (end - start).total_seconds()


def wait_until(window: Window, now: datetime, estimate_seconds: float | None = None) -> datetime | None:
    """When a migration of this estimated duration may start: None when it may start now.

    Raises ValueError when the estimate is longer than a whole opening, since waiting would never end.
    """
    allowed, _ = may_start(window, now, estimate_seconds)
    if allowed:
        return None
    if estimate_seconds is not None and estimate_seconds > window_seconds(window):
        raise ValueError(f"estimated {estimate_seconds:.0f}s is longer than the whole window "
                         f"({window.start}-{window.end} {window.timezone}, {window_seconds(window):.0f}s)")
    bounds = window_bounds_at(window, now)
    after = bounds[1] if bounds else now  # open but too short: the next opening after this one ends
    moment = next_window_start(window, after)
    if moment == after and bounds:  # another day's opening starts exactly when this one ends
        moment = next_window_start(window, after + timedelta(minutes=1))
    return moment


def estimate_seconds(pending: Iterable["Promotable"],
                     rehearsals: dict[tuple[str, str], list[LedgerEntry]]) -> tuple[float | None, list[str]]:
    """(seconds, scripts without a rehearsal) from successful rehearsals of the same files.

    The estimate per file is its slowest successful run with the same checksum in any rehearsal
    ledger (``execution_time``, milliseconds); None when no pending file was ever rehearsed.
    Files never rehearsed add nothing, so they are listed for the log.
    """
    total, known, unknown = 0.0, 0, []
    for p in pending:
        times = [e.execution_time for (_, tech), rows in rehearsals.items() if tech == p.technology
                 for e in rows if p.same_file(e) and e.status is Status.SUCCESS]
        if times:
            total += max(times) / 1000.0
            known += 1
        else:
            unknown.append(p.script)
    return (total if known else None), unknown


# --- promotion gate -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Promotable:
    """One migration a production run would apply: identified by script and checksum."""

    technology: str
    version: str | None
    script: str
    checksum: int
    sha256: str | None = None  # the file's bytes: a repeatable's checksum is recorded over rendered text

    def same_file(self, e: LedgerEntry) -> bool:
        """``e`` ran this very file: same checksum, or (a repeatable whose ledger checksum is over the
        text with that environment's placeholders) the same sha256 of the file."""
        return e.script == self.script and (e.checksum == self.checksum
                                            or (self.sha256 is not None and e.sha256 == self.sha256))


def promotion_missing(pending: Iterable[Promotable],
                      staging_ledgers: dict[tuple[str, str], list[LedgerEntry]]) -> list[str]:
    """What has not yet succeeded, with the same checksum, in every staging region's ledger.

    ``staging_ledgers`` maps (region, technology) to that staging target's ledger rows.
    """
    missing = []
    for p in pending:
        regions = [r for (r, t) in staging_ledgers if t == p.technology]
        if not regions:
            missing.append(f"{p.technology} {p.version or p.script}: no staging ledger for {p.technology} was read")
            continue
        bad = []
        for r in sorted(regions):
            ok = any(p.same_file(e) and e.status is Status.SUCCESS
                     and (e.version == p.version or (p.version is None and e.version is None))
                     for e in staging_ledgers[(r, p.technology)])
            if not ok:
                bad.append(r)
        if bad:
            missing.append(f"{p.technology} {p.version or 'R'} {p.script} (checksum {p.checksum}): "
                           f"not succeeded in staging region(s) {', '.join(bad)}")
    return missing
