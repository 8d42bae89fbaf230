"""A regulated change needs a compliance sign-off besides the environment's approvals (policy.evaluate)."""

from __future__ import annotations

from datetime import datetime, timezone

from polymigrate.policy import Approval, ChangeSet, evaluate
from polymigrate.spec.models import Policy

NOW = datetime(2026, 12, 6, 12, tzinfo=timezone.utc)
POLICY = Policy.model_validate({"approvals": {"required": 2, "roles": ["dba"], "triggerer_may_approve": False,
                                              "compliance_roles": ["compliance"]}})


def _a(user, *roles):
    return Approval(user, "approve", "h", NOW, frozenset(roles))


def test_a_regulated_change_waits_for_compliance_after_the_usual_approvals():
    change = ChangeSet("d", "production", "h", "dev1", regulated=2)
    d = evaluate(POLICY, change, [_a("ann", "dba"), _a("cid", "dba")], NOW)
    assert d.status == "waiting" and d.compliance_required and not d.signed_off_by
    assert "needs a compliance sign-off from a holder of role compliance" in d.reasons[-1]
    assert "2 regulated change(s)" in d.reasons[-1]
    d = evaluate(POLICY, change, [_a("ann", "dba"), _a("cora", "compliance"), _a("cid", "dba")], NOW)
    assert d.status == "approved" and d.approved_by == ["ann", "cid"] and d.signed_off_by == ["cora"]
    assert d.to_dict()["signed_off_by"] == ["cora"]


def test_the_sign_off_does_not_replace_an_approval_nor_come_from_the_triggering_user():
    change = ChangeSet("d", "production", "h", "cora", regulated=1)
    d = evaluate(POLICY, change, [_a("ann", "dba"), _a("cora", "compliance")], NOW)
    assert d.status == "waiting" and not d.signed_off_by and any("four-eyes" in i for i in d.ignored)


def test_nothing_regulated_or_no_compliance_roles_means_no_sign_off():
    assert evaluate(POLICY, ChangeSet("d", "production", "h", "dev1"), [_a("ann", "dba"), _a("cid", "dba")],
                    NOW).status == "approved"
    plain = Policy.model_validate({"approvals": {"required": 1, "roles": ["dba"]}})
    d = evaluate(plain, ChangeSet("d", "production", "h", "dev1", regulated=3), [_a("ann", "dba")], NOW)
    assert d.status == "approved" and not d.compliance_required
