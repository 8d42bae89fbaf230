"""Gates that read targets before a run proceeds: the promotion gate (production only runs what
already succeeded in staging) and the rehearsal timings windows are checked against.
Composition of adapters and the pure checks in ``policy``."""

from __future__ import annotations

from dataclasses import dataclass, field

from polymigrate.commands import Connect
from polymigrate.errors import PolymigrateError
from polymigrate.ledger import LedgerEntry
from polymigrate.plan import Plan
from polymigrate.policy import Promotable, promotion_missing
from polymigrate.spec import Domain, Environment, Project


@dataclass
class StagingLedgers:
    """Ledger rows of the rehearsal environment's targets, and the targets that could not be read."""

    environment: str
    ledgers: dict[tuple[str, str], list[LedgerEntry]] = field(default_factory=dict)
    unreadable: dict[tuple[str, str], str] = field(default_factory=dict)


def promotable(plan: Plan) -> list[Promotable]:
    """Everything a production plan would apply, once per (technology, script, checksum)."""
    seen = {}
    for t in plan.targets:
        for s in t.steps:
            seen[(t.technology, s.script, s.checksum)] = Promotable(t.technology, s.version, s.script, s.checksum)
    return list(seen.values())


def read_staging_ledgers(project: Project, domain: Domain, staging: Environment, connect: Connect,
                         technologies: list[str] | None = None) -> StagingLedgers:
    """(region, technology) → ledger rows of every staging target of the domain.

    A target that cannot be read (missing connection, server down) is recorded in ``unreadable``
    instead of raising: the gate then refuses what it cannot confirm, naming that target.
    """
    out = StagingLedgers(staging.name)
    for region in project.regions_of(domain, staging):
        for tech in domain.technology_order():
            if technologies is not None and tech not in technologies:
                continue
            try:
                adapter = connect(region.name, tech)
            except PolymigrateError as exc:
                out.unreadable[(region.name, tech)] = str(exc)
                continue
            if adapter is None:
                continue
            try:
                out.ledgers[(region.name, tech)] = adapter.read_ledger()
            except PolymigrateError as exc:
                out.unreadable[(region.name, tech)] = str(exc)
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
    pending = promotable(plan)
    if not pending:
        return []
    techs = sorted({p.technology for p in pending})
    read = read_staging_ledgers(project, domain, staging, connect_staging, techs)
    missing = [f"{tech} in {source} region {region}: ledger not readable ({why})"
               for (region, tech), why in sorted(read.unreadable.items())]
    readable = [p for p in pending if not any(t == p.technology for (_, t) in read.unreadable)]
    return missing + promotion_missing(readable, read.ledgers)
