"""Plans: what a run would apply on every (region, technology) target of a domain, read from ledgers."""

from __future__ import annotations

import re
from typing import Callable

from polymigrate.adapters.base import Adapter
from polymigrate.catalog import DomainCatalog
from polymigrate.executor import plan_target
from polymigrate.ledger import LedgerEntry, fingerprint
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
    locations: dict[tuple[str, str], TargetPlan] = {}  # (technology, where its ledger is) -> first target there
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
                    entries = adapter.read_ledger()
                    plan.ledgers[f"{region.name}/{tech}"] = fingerprint(entries)
                    tp = plan_target(adapter, applicable, region.name, target_version=target_version,
                                     out_of_order=out_of_order, entries=entries)
                    tp.target = conn_id
                    tp.problems += written_elsewhere(entries, environment.name, region.name, adapter.target)
                    where = (tech, ledger_location(adapter.target))
                    first = locations.setdefault(where, tp)
                    if first is not tp:
                        tp.problems.append(shared_message(first, tp, environment.name, adapter.target))
                finally:
                    adapter.close()
            plan.targets.append(tp)
    return plan


# A ledger records what ran where it lives. Two targets reading one ledger (the same database named
# by two connections, or a domain setting that overrides the connection's database) would each see
# the other's rows as their own: staging would look rehearsed because development ran, and an
# estimate would count another environment's durations. Such a plan is refused, naming both.
SHARED_HINT = ("give each environment and region its own database, schema, key prefix or index (a MongoDB "
               "connection that names a database wins over the domain's mongodb.database), then clear plan")
NO_OWNER = (None, "", "adhoc")  # rows of ad hoc runs, Flyway or migrate-mongo imports: no environment to compare


def ledger_location(target: str) -> str:
    """Where a ledger lives, without who connects: ``postgresql://app@h/db`` and ``postgresql://ro@h/db`` are one."""
    return re.sub(r"//[^/@\s]*@", "//", target)


def written_elsewhere(entries: list[LedgerEntry], environment: str, region: str, target: str) -> list[str]:
    """A problem when the ledger holds rows another environment or region wrote (shared, not ours)."""
    others = sorted({(e.environment, e.region) for e in entries if e.environment not in NO_OWNER
                     and (e.environment != environment or (e.region not in (None, region)))},
                    key=lambda x: (x[0] or "", x[1] or ""))
    if not others:
        return []
    names = ", ".join(f"{env}/{reg}" if reg else env for env, reg in others)
    return [f"the ledger at {ledger_location(target)} is shared: {environment}/{region} reads rows that {names} "
            f"wrote, so what it says ran here ran there; {SHARED_HINT}"]


def shared_message(first: TargetPlan, second: TargetPlan, environment: str, target: str) -> str:
    return (f"{environment}/{first.region} and {environment}/{second.region} resolve to the same ledger "
            f"({ledger_location(target)}, connections '{first.target}' and '{second.target}'); {SHARED_HINT}")


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
