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


def test_promotion_gate_knows_a_repeatable_with_placeholders_by_its_file():
    # staging recorded the checksum of the text with staging's placeholder values (as Flyway does);
    # production's plan has the file's own checksum: the file's sha256 says it is the same file
    row = LedgerEntry(1, None, "grants", "SQL", "R__grants.sql", 555, status=Status.SUCCESS, sha256="ab" * 32)
    staging = {("western_europe", "postgresql"): [row]}
    same = Promotable("postgresql", None, "R__grants.sql", 1368749946, "ab" * 32)
    edited = Promotable("postgresql", None, "R__grants.sql", 1368749946, "cd" * 32)
    assert promotion_missing([same], staging) == []
    assert "not succeeded in staging" in promotion_missing([edited], staging)[0]


# --- who may answer, the bound hash, windows with estimates, rehearsal estimates ----------------

def test_override_without_a_named_stricter_level_needs_one_more_approval():
    plain = Policy(approvals=ApprovalPolicy(required=1, roles=["dba"]))
    d = evaluate(plain, change(), [ok("ann")], NOW, override=True)
    assert d.status == "waiting" and d.required == 2 and d.escalated
    assert evaluate(plain, change(), [ok("ann"), ok("cid")], NOW, override=True).status == "approved"


def test_blocking_lint_can_only_pass_through_an_override_with_the_stricter_approval():
    c = change(blocking_findings=1)
    assert evaluate(PROD, c, [ok("ann"), ok("cid")], NOW, override=True).status == "waiting"
    assert evaluate(PROD, c, [ok("ann"), ok("bob"), ok("cid")], NOW, override=True).status == "approved"


def test_users_listed_by_name_may_approve_without_a_role():
    named = Policy(approvals=ApprovalPolicy(required=1, roles=["dba"], users=["erin"]))
    assert evaluate(named, change(), [ok("erin", roles=())], NOW).status == "approved"
    assert evaluate(named, change(), [ok("finn", roles=())], NOW).status == "waiting"


def test_a_rejection_for_another_change_set_does_not_end_the_run():
    stale_no = Approval("bob", "reject", "b" * 64, NOW - timedelta(minutes=1), frozenset({"dba"}))
    assert evaluate(PROD, change(), [stale_no, ok("ann")], NOW).status == "waiting"


def test_eligible_approvers_follow_roles_escalation_and_four_eyes():
    from polymigrate.policy import eligible_roles
    from polymigrate.spec.approvers import Approvers

    people = Approvers(users={"olga": ["dba"], "ann": ["dba"], "bob": ["release_manager"], "dev1": ["developer"]})
    ap = PROD.approvals
    assert people.eligible(eligible_roles(ap, change()), ap.users, exclude="olga") == ["ann", "bob"]
    assert people.eligible(eligible_roles(ap, change(risk="high")), ap.users, exclude="olga") == ["ann"]
    assert people.eligible(eligible_roles(ap, change(), override=True), ap.users) == ["ann", "olga"]


def test_bound_hash_covers_file_contents_and_placeholders_not_order(tmp_path):
    from polymigrate.catalog import discover
    from polymigrate.policy import bound_changeset_hash
    from polymigrate.spec.models import Environment

    folder = tmp_path / "postgresql"
    folder.mkdir()
    (folder / "V1__a.sql").write_text("CREATE TABLE a (id int);\n")
    (folder / "V2__b.sql").write_text("INSERT INTO a VALUES (${n});\n")
    env = Environment(name="production", regions={"we": {"name": "we", "placeholders": {"n": "1"}}})
    files = discover("shop", "postgresql", folder).migrations["postgresql"]
    base = bound_changeset_hash("shop", env, files)
    assert bound_changeset_hash("shop", env, list(reversed(files))) == base
    other = env.model_copy(update={"regions": {"we": env.regions["we"].model_copy(update={"placeholders": {"n": "2"}})}})
    assert bound_changeset_hash("shop", other, files) != base
    (folder / "V2__b.sql").write_text("INSERT INTO a VALUES (${n}); -- lint-ignore: ban-drop-column reason\n")
    edited = discover("shop", "postgresql", folder).migrations["postgresql"]
    assert bound_changeset_hash("shop", env, edited) != base


WORK_HOURS = Window(days=["mon", "tue", "wed", "thu", "fri"], start="09:00", end="11:00", timezone="UTC")


@pytest.mark.parametrize("now,estimate,expected", [
    (datetime(2026, 11, 25, 9, 30, tzinfo=timezone.utc), None, None),                       # open: start now
    (datetime(2026, 11, 25, 9, 30, tzinfo=timezone.utc), 600, None),                        # fits before 11:00
    (datetime(2026, 11, 25, 10, 55, tzinfo=timezone.utc), 600, "2026-11-26T09:00:00+00:00"),  # runs past 11:00
    (datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc), None, "2026-11-26T09:00:00+00:00"),  # closed
    (datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc), None, "2026-11-30T09:00:00+00:00"),  # Friday → Monday
], ids=["open", "fits", "too-long-for-the-rest", "closed", "weekend"])
def test_wait_until_window(now, estimate, expected):
    from polymigrate.policy import wait_until

    moment = wait_until(WORK_HOURS, now, estimate)
    assert (moment.isoformat() if moment else None) == expected


def test_a_migration_longer_than_the_whole_window_is_refused_not_waited_for():
    from polymigrate.policy import wait_until, window_seconds

    assert window_seconds(WORK_HOURS) == 7200 and window_seconds(NIGHT) == 4 * 3600
    with pytest.raises(ValueError, match="longer than the whole window"):
        wait_until(WORK_HOURS, datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc), 3 * 3600)


def test_estimate_takes_the_slowest_successful_rehearsal_of_the_same_file():
    from polymigrate.policy import estimate_seconds

    def timed(script, checksum, ms, status=Status.SUCCESS):
        return LedgerEntry(1, "1", "d", "SQL", script, checksum, status=status, execution_time=ms)

    rehearsals = {("western_europe", "postgresql"): [timed("V1__a.sql", 11, 2000), timed("V2__b.sql", 22, 999_000, Status.FAILED)],
                  ("north_africa", "postgresql"): [timed("V1__a.sql", 11, 5000), timed("V1__a.sql", 99, 90_000)]}
    pending = [Promotable("postgresql", "1", "V1__a.sql", 11), Promotable("postgresql", "2", "V2__b.sql", 22)]
    assert estimate_seconds(pending, rehearsals) == (5.0, ["V2__b.sql"])
    assert estimate_seconds(pending[1:], rehearsals) == (None, ["V2__b.sql"])
