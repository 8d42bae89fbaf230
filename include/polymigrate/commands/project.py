"""Loading what a run acts on: the project, one domain's catalog, one environment.

Every problem is collected (``SpecError`` lists them all, each with file and line); a domain whose
dependency has broken files is reported broken too, since it cannot run either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from polymigrate.catalog import DomainCatalog, Migration, discover_domain
from polymigrate.errors import Problem, SpecError
from polymigrate.spec import Domain, Environment, Project, load_project
from polymigrate.spec.loader import dependency_order


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


def validate_project(root: str | Path, domains: list[str] | None = None, *,
                     project: Project | None = None) -> Validated:
    """Load specs (unless ``project`` is given) and discover every domain's migrations; collect every problem."""
    project = project or load_project(root)
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


def load_domain(root: str | Path, name: str, *, project: Project | None = None) -> tuple[Project, Domain, DomainCatalog]:
    """One domain, ready to run; SpecError listing every problem of that domain otherwise."""
    v = validate_project(root, [name], project=project)
    problems = v.domain_problems(name) or [p for p in v.project.problems if p.domain in (None, name)
                                           and "environments" in p.file]
    if name not in v.project.domains:
        raise SpecError(problems or [Problem(str(root), f"no domain named '{name}'")])
    if v.catalogs[name].problems:
        raise SpecError(v.catalogs[name].problems)
    return v.project, v.project.domains[name], v.catalogs[name]


def environment_of(project: Project, name: str, root: str | Path = "") -> Environment:
    """The environment ``name``; SpecError naming its file's problems (or that it is not defined)."""
    env = project.environments.get(name)
    if env is None:
        problems = [p for p in project.problems if "environments" in p.file] or [
            Problem(str(root or project.root), f"environment '{name}' is not defined",
                    hint=f"add environments/{name}.yaml; defined: {', '.join(sorted(project.environments)) or 'none'}")]
        raise SpecError(problems)
    return env


def all_migrations(domain: Domain, catalog: DomainCatalog) -> list[Migration]:
    """Every file of the domain the change-set hash covers (undo files too: they are part of what ships)."""
    return [m for tech in domain.technology_order() for m in catalog.migrations.get(tech, [])]
