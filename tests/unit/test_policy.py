"""Approval policy, windows and the promotion gate, as pure functions (issue 5)."""

from datetime import datetime, timedelta, timezone

import pytest

from polymigrate.ledger import LedgerEntry, Status
from polymigrate.policy import (Approval, ChangeSet, Promotable, evaluate, may_start, next_window_start,
                                promotion_missing)
from polymigrate.spec.models import ApprovalPolicy, Policy, Window

NOW = datetime(2026, 11, 25, 2, 0, tzinfo=timezone.utc)  # a Wednesday
H = "a" * 64

PROD = Policy(approvals=ApprovalPolicy(required=2, roles=["dba", "release_manager"], triggerer_may_approve=False,
                                       expiry_hours=24, high_risk_required=3, high_risk_roles=["dba"]),
              destructive_allowed=False, lint_block_at="medium")
DEV = Policy(approvals=ApprovalPolicy(required=0))


def change(**kw):
    return ChangeSet(**{"domain": "social-commerce", "environment": "production", "hash": H,
                        "triggered_by": "olga", **kw})


def ok(user, roles=("dba",), h=H, at=NOW - timedelta(minutes=5), comment=""):
    return Approval(user, "approve", h, at, frozenset(roles), comment)


def no(user, roles=("dba",), comment="not tonight"):
    return Approval(user, "reject", H, NOW - timedelta(minutes=1), frozenset(roles), comment)


CASES = [
    # (id, policy, change kwargs, approvals, expected status, expected text in reasons/ignored)
    ("dev approves automatically", DEV, {}, [], "approved", None),
    ("prod waits with no approval", PROD, {}, [], "waiting", "needs 2 more approval(s) with role dba or release_manager"),
    ("two distinct allowed users", PROD, {}, [ok("ann"), ok("bob", ("release_manager",))], "approved", None),
    ("four-eyes: triggerer does not count", PROD, {}, [ok("olga"), ok("ann")], "waiting", "olga: triggered this run"),
    ("same person twice counts once", PROD, {}, [ok("ann"), ok("ann")], "waiting", "N approvals need N distinct people"),
    ("role not allowed", PROD, {}, [ok("ann"), ok("dev1", ("developer",))], "waiting", "dev1: needs one of the roles"),
    ("approval for another hash", PROD, {}, [ok("ann"), ok("bob", h="b" * 64)], "waiting", "answered for change set bbbbbbbbbbbb"),
    ("expired approval", PROD, {}, [ok("ann"), ok("bob", at=NOW - timedelta(hours=25))], "waiting", "bob: expired (24 h)"),
    ("a rejection refuses", PROD, {}, [ok("ann"), no("bob")], "refused", "rejected by bob: not tonight"),
    ("high risk escalates to 3 DBAs", PROD, {"risk": "high"}, [ok("ann"), ok("bob", ("release_manager",))], "waiting",
     "needs 2 more approval(s) with role dba"),
    ("high risk with 3 DBAs", PROD, {"risk": "critical"}, [ok("ann"), ok("bob"), ok("cid")], "approved", None),
    ("destructive refused in prod", PROD, {"destructive": True}, [ok("ann"), ok("bob"), ok("cid")], "refused",
     "destructive changes are not allowed"),
    ("blocking lint refuses", PROD, {"blocking_findings": 2}, [ok("ann"), ok("bob")], "refused", "2 lint finding(s)"),
]


@pytest.mark.parametrize("policy,kw,approvals,status,text", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_policy_table(policy, kw, approvals, status, text):
    d = evaluate(policy, change(**kw), approvals, NOW)
    assert d.status == status, d
    if text:
        assert any(text in r for r in d.reasons + d.ignored), d


def test_override_allows_destructive_only_with_the_stricter_approval():
    c = change(destructive=True)
    waiting = evaluate(PROD, c, [ok("ann"), ok("bob")], NOW, override=True)
    assert waiting.status == "waiting" and waiting.required == 3 and waiting.override
    done = evaluate(PROD, c, [ok("ann"), ok("bob"), ok("cid")], NOW, override=True)
    assert done.status == "approved" and done.approved_by == ["ann", "bob", "cid"]


def test_changed_hash_after_approval_voids_every_approval():
    approvals = [ok("ann"), ok("bob")]
    assert evaluate(PROD, change(), approvals, NOW).status == "approved"
    after_edit = evaluate(PROD, change(hash="c" * 64), approvals, NOW)
    assert after_edit.status == "waiting" and len(after_edit.ignored) == 2


NIGHT = Window(days=["mon", "tue", "wed", "thu", "fri"], start="23:00", end="03:00", timezone="Europe/Berlin")


def test_window_crossing_midnight_is_open_after_midnight():
    wed_0130_berlin = datetime(2026, 11, 25, 0, 30, tzinfo=timezone.utc)  # 01:30 CET, Wednesday
    assert may_start(NIGHT, wed_0130_berlin)[0]


def test_window_closed_names_the_next_opening():
    noon = datetime(2026, 11, 25, 11, 0, tzinfo=timezone.utc)
    allowed, why = may_start(NIGHT, noon)
    assert not allowed and "opens 2026-11-25T23:00:00+01:00" in why
    assert next_window_start(NIGHT, noon).isoformat() == "2026-11-25T23:00:00+01:00"


def test_window_skips_days_not_listed():
    fri_noon = datetime(2026, 11, 27, 11, 0, tzinfo=timezone.utc)
    # Friday 23:00 opens (fri listed); Saturday would not
    assert next_window_start(NIGHT, fri_noon).isoformat() == "2026-11-27T23:00:00+01:00"
    sat_noon = datetime(2026, 11, 28, 11, 0, tzinfo=timezone.utc)
    assert next_window_start(NIGHT, sat_noon).isoformat() == "2026-11-30T23:00:00+01:00"


def test_migration_that_cannot_finish_before_the_window_closes_does_not_start():
    at_0245 = datetime(2026, 11, 25, 1, 45, tzinfo=timezone.utc)  # 02:45 Berlin, window ends 03:00
    assert may_start(NIGHT, at_0245, estimate_seconds=600)[0]
    allowed, why = may_start(NIGHT, at_0245, estimate_seconds=1800)
    assert not allowed and "past the window's end" in why


def entry(script, checksum, status=Status.SUCCESS, version="1"):
    return LedgerEntry(1, version, "d", "SQL", script, checksum, status=status)


def test_promotion_gate_lists_what_staging_has_not_run():
    pending = [Promotable("postgresql", "1", "V1__a.sql", 11), Promotable("postgresql", "2", "V2__b.sql", 22)]
    staging = {("western_europe", "postgresql"): [entry("V1__a.sql", 11), entry("V2__b.sql", 22, version="2")],
               ("north_africa", "postgresql"): [entry("V1__a.sql", 11)]}
    missing = promotion_missing(pending, staging)
    assert missing == ["postgresql 2 V2__b.sql (checksum 22): not succeeded in staging region(s) north_africa"]


def test_promotion_gate_refuses_a_checksum_staging_never_ran():
    pending = [Promotable("postgresql", "1", "V1__a.sql", 99)]
    staging = {("western_europe", "postgresql"): [entry("V1__a.sql", 11)]}
    assert "checksum 99" in promotion_missing(pending, staging)[0]
    assert promotion_missing([Promotable("postgresql", "1", "V1__a.sql", 11)], staging) == []
