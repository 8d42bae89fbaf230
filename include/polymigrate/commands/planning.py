"""Plans: what a run would apply on every (region, technology) target of a domain, read from ledgers."""

from __future__ import annotations

from typing import Callable

from polymigrate.adapters.base import Adapter
from polymigrate.catalog import DomainCatalog
from polymigrate.executor import plan_target
from polymigrate.plan import Plan, TargetPlan
from polymigrate.reconcile import current_version, reconcile
from polymigrate.spec import Domain, Environment, Project

Connect = Callable[[str, str], "Adapter | None"]  # (region, technology) -> adapter, or None when not configured


def plan_domain(project: Project, domain: Domain, catalog: DomainCatalog, environment: Environment,
                connect: Connect, *, regions: list[str] | None = None, target_version: str | None = None,
                out_of_order: bool = False) -> Plan:
    """Plan every (region, technology) target of a domain in one environment.

    A target whose ledger cannot be read (no connection configured, server down) is planned against
    an empty ledger and carries an ``error`` saying so, rather than hiding the other targets.
    """
    plan = Plan(domain.name, environment.name)
    for region in project.regions_of(domain, environment):
        if regions and region.name not in regions:
            continue
        for tech in domain.technology_order():
            applicable = catalog.applicable(tech)
            conn_id = environment.connection_id(region.name, tech)
            adapter = None
            error = None
            try:
                adapter = connect(region.name, tech)
            except Exception as exc:  # report, do not hide the other targets
                error = f"cannot connect ({conn_id}): {exc}"
            if adapter is None:
                infos = reconcile(applicable, [], target_version=target_version, out_of_order=out_of_order)
                tp = TargetPlan.from_infos(region.name, tech, conn_id, infos, current_version(infos), out_of_order=out_of_order)
                tp.error = error or f"ledger not read: connection '{conn_id}' is not configured"
            else:
                try:
                    tp = plan_target(adapter, applicable, region.name, target_version=target_version,
                                     out_of_order=out_of_order)
                    tp.target = conn_id
                finally:
                    adapter.close()
            plan.targets.append(tp)
    return plan


def plan_table(plan: Plan) -> str:
    """The plan as a fixed-width table for a task log."""
    rows = [("region", "technology", "current", "pending", "first", "last", "notes")]
    for t in plan.targets:
        notes = "; ".join(t.problems + ([t.error] if t.error else []))
        rows.append((t.region, t.technology, t.current_version or "-", str(len(t.steps)),
                     t.steps[0].script if t.steps else "-", t.steps[-1].script if t.steps else "-", notes or "ok"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + f"\n{plan.pending} migration(s) pending in total"
