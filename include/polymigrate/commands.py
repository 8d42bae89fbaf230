"""One thin function per verb, composing spec loading, catalog, adapters and executor.

The CLI and the Airflow operators both call these, so a DAG task and ``polymigrate plan`` give the
same answer for the same state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from polymigrate.adapters.base import Adapter
from polymigrate.catalog import DomainCatalog, discover_domain
from polymigrate.errors import Problem, SpecError
from polymigrate.executor import plan_target
from polymigrate.plan import Plan, TargetPlan
from polymigrate.reconcile import current_version, reconcile
from polymigrate.spec import Domain, Environment, Project, load_project
from polymigrate.spec.loader import dependency_order

Connect = Callable[[str, str], "Adapter | None"]  # (region, technology) -> adapter, or None when unreachable


@dataclass
class Validated:
    project: Project
    catalogs: dict[str, DomainCatalog] = field(default_factory=dict)

    @property
    def problems(self) -> list[Problem]:
        return self.project.problems + [p for c in self.catalogs.values() for p in c.problems]

    @property
    def notes(self) -> list[Problem]:
        return self.project.notes + [n for c in self.catalogs.values() for n in c.notes]

    def good_domains(self) -> list[str]:
        return [d for d, c in self.catalogs.items() if not c.problems]

    def domain_problems(self, name: str) -> list[Problem]:
        if name in self.project.broken_domains:
            return self.project.broken_domains[name]
        return self.catalogs[name].problems if name in self.catalogs else []


def validate_project(root: str | Path, domains: list[str] | None = None) -> Validated:
    """Load specs and discover every domain's migrations; collect every problem."""
    project = load_project(root)
    v = Validated(project)
    wanted = [n for n in project.domains if not domains or n in domains]
    # Dependencies are discovered too: a domain whose dependency has broken files cannot run either.
    needed = dependency_order(project, wanted)
    catalogs = {name: discover_domain(project.domains[name]) for name in needed}
    for name in needed:
        d = project.domains[name]
        for dep in d.depends_on:
            if dep in catalogs and catalogs[dep].problems:
                catalogs[name].problems.append(Problem(
                    str(Path(d.path) / "domain.yaml"), f"depends_on '{dep}', whose migrations have problems",
                    hint=f"fix domain '{dep}' first (polymigrate validate -d {dep})", domain=name))
    v.catalogs = {n: catalogs[n] for n in wanted}
    if domains:
        unknown = [d for d in domains if d not in project.domains and d not in project.broken_domains]
        for d in unknown:
            project.problems.append(Problem(str(root), f"no domain named '{d}'",
                                            hint=f"one of {sorted(set(project.domains) | set(project.broken_domains))}"))
    return v


def load_domain(root: str | Path, name: str) -> tuple[Project, Domain, DomainCatalog]:
    """One domain, ready to run; SpecError listing every problem of that domain otherwise."""
    v = validate_project(root, [name])
    problems = v.domain_problems(name) or [p for p in v.project.problems if p.domain in (None, name)
                                           and "environments" in p.file]
    if name not in v.project.domains:
        raise SpecError(problems or [Problem(str(root), f"no domain named '{name}'")])
    if v.catalogs[name].problems:
        raise SpecError(v.catalogs[name].problems)
    return v.project, v.project.domains[name], v.catalogs[name]


def plan_domain(project: Project, domain: Domain, catalog: DomainCatalog, environment: Environment,
                connect: Connect, *, regions: list[str] | None = None, target: str | None = None,
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
            migrations = catalog.migrations.get(tech, [])
            applicable = [m for m in migrations if m.kind.value != "undo"]
            conn_id = environment.connection_id(region.name, tech)
            adapter = None
            error = None
            try:
                adapter = connect(region.name, tech)
            except Exception as exc:  # report, do not hide the other targets
                error = f"cannot connect ({conn_id}): {exc}"
            if adapter is None:
                infos = reconcile(applicable, [], target=target, out_of_order=out_of_order)
                tp = TargetPlan.from_infos(region.name, tech, conn_id, infos, current_version(infos), out_of_order=out_of_order)
                tp.error = error or f"ledger not read: connection '{conn_id}' is not configured"
            else:
                try:
                    tp = plan_target(adapter, applicable, region.name, target=target, out_of_order=out_of_order)
                    tp.target = conn_id
                finally:
                    adapter.close()
            plan.targets.append(tp)
    return plan
