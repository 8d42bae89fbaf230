"""Gates that read targets before a run proceeds: the promotion gate (production only runs what
already succeeded in staging). Composition of adapters and the pure checks in ``policy``."""

from __future__ import annotations

from polymigrate.commands import Connect
from polymigrate.plan import Plan
from polymigrate.policy import Promotable, promotion_missing
from polymigrate.spec import Domain, Environment, Project


def promotable(plan: Plan) -> list[Promotable]:
    """Everything a production plan would apply, once per (technology, script, checksum)."""
    seen = {}
    for t in plan.targets:
        for s in t.steps:
            seen[(t.technology, s.script, s.checksum)] = Promotable(t.technology, s.version, s.script, s.checksum)
    return list(seen.values())


def read_staging_ledgers(project: Project, domain: Domain, staging: Environment, connect: Connect) -> dict:
    """(region, technology) → ledger rows of every staging target of the domain."""
    out = {}
    for region in project.regions_of(domain, staging):
        for tech in domain.technology_order():
            adapter = connect(region.name, tech)
            if adapter is None:
                continue
            try:
                out[(region.name, tech)] = adapter.read_ledger()
            finally:
                adapter.close()
    return out


def promotion_gate(plan: Plan, project: Project, domain: Domain, environment: Environment,
                   connect_staging: Connect) -> list[str]:
    """What the plan would apply that has not succeeded in ``policy.promotion_from`` (empty: pass)."""
    source = environment.policy.promotion_from
    if not source:
        return []
    staging = project.environments.get(source)
    if staging is None:
        return [f"promotion_from names environment '{source}', which is not defined"]
    return promotion_missing(promotable(plan), read_staging_ledgers(project, domain, staging, connect_staging))

