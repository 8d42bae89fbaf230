"""The samples are what users copy: every sample domain passes production's policy honestly.

No emergency override: lint findings at production's threshold are fixed or waived with a reason,
and a destructive contract step waived in its file passes with the stricter approval (three DBAs)
while an unwaived one is still refused.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from polymigrate.catalog import discover_domain
from polymigrate.lint import lint_catalog
from polymigrate.policy import Approval, ChangeSet, evaluate
from polymigrate.spec import load_project
from polymigrate.spec.approvers import load_approvers

SPECS = Path(__file__).resolve().parents[2] / "migration_specs"
PROJECT = load_project(SPECS)
PEOPLE = load_approvers(SPECS)
NOW = datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)


def change_of(domain: str, environment: str = "production") -> ChangeSet:
    """The change set the validate task hands to the approve task."""
    report = lint_catalog(discover_domain(PROJECT.domains[domain]))
    env = PROJECT.environments[environment]
    return ChangeSet(domain=domain, environment=environment, hash="h" * 64, triggered_by="dev1", risk=report.risk,
                     destructive=report.destructive,
                     destructive_waived=report.destructive and not any(f.destructive and not f.suppressed for f in report.findings),
                     blocking_findings=len(report.blocking(env.policy.lint_block_at)))


def approvals(*users: str) -> list[Approval]:
    return [Approval(u, "approve", "h" * 64, NOW, PEOPLE.roles_of(u)) for u in users]


@pytest.mark.parametrize("domain", sorted(PROJECT.domains))
def test_every_sample_domain_can_be_approved_in_production_without_an_override(domain):
    change = change_of(domain)
    policy = PROJECT.environments["production"].policy
    assert change.blocking_findings == 0
    waiting = evaluate(policy, change, [], NOW)
    assert waiting.status == "waiting", waiting.reasons
    people = ("ann", "cid", "admin") if waiting.escalated else ("ann", "bob")
    decision = evaluate(policy, change, approvals(*people), NOW)
    assert decision.status == "approved", decision.reasons + decision.ignored
    assert waiting.required == (3 if change.destructive else 2)


def test_an_unwaived_destructive_change_is_still_refused_in_production():
    policy = PROJECT.environments["production"].policy
    change = ChangeSet("shop", "production", "h" * 64, "bob", destructive=True, destructive_waived=False)
    decision = evaluate(policy, change, approvals("ann", "cid", "admin"), NOW)
    assert decision.status == "refused" and "waived in its file with a reason" in decision.reasons[0]
