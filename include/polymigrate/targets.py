"""What an environment can serve: which (region, technology) targets a run may touch, and why the
others are skipped.

A technology is served in a region when this installation has its adapter
(``polymigrate.adapters.REGISTRY``), the environment lists it (``technologies:`` in
``environments/<env>.yaml``, default: all) and the region does too (its own ``technologies:``,
default: the environment's). Decided from specs and the registry only, so the DAG's default params
(parse time, no I/O) name only what a scheduled run can reach, and the plan says what it skipped.
"""

from __future__ import annotations

from polymigrate.spec.models import Domain, Environment, Project


def registered() -> set[str]:
    from polymigrate.adapters import REGISTRY

    return set(REGISTRY)


def why_not(env: Environment, region: str, technology: str, adapters: set[str] | None = None) -> str | None:
    """Why ``region`` of ``env`` cannot serve ``technology`` (None: it can)."""
    if env.technologies is not None and technology not in env.technologies:
        why = env.left_out.get(technology)
        return (f"{env.name} does not serve {technology}" + (f": {why}" if why else "")
                + f" (technologies: {', '.join(env.technologies)} in environments/{env.name}.yaml)")
    r = env.regions.get(region)
    if r is not None and r.technologies is not None and technology not in r.technologies:
        why = env.left_out.get(f"{region}/{technology}")
        return (f"region {region} of {env.name} does not serve {technology}" + (f": {why}" if why else "")
                + f" (its technologies: {', '.join(r.technologies)})")
    adapters = registered() if adapters is None else adapters
    if technology not in adapters:
        return f"no {technology} adapter in this installation (registered: {', '.join(sorted(adapters))})"
    return None


def served(project: Project, domain: Domain, env: Environment, *, declared_only: bool = False) -> dict[str, list[str]]:
    """Region → the domain's technologies it serves, in execution order.

    ``declared_only`` ignores the adapter registry (the spec's answer alone: what the DAG's shape
    shows, so it does not change when an adapter is installed).
    """
    adapters = set(domain.technology_order()) if declared_only else registered()
    return {r.name: [t for t in domain.technology_order() if why_not(env, r.name, t, adapters) is None]
            for r in project.regions_of(domain, env)}


def default_technologies(project: Project, domain: Domain, env: Environment) -> list[str]:
    """What a run selects by default: every technology some region serves."""
    serve = served(project, domain, env)
    return [t for t in domain.technology_order() if any(t in ts for ts in serve.values())]


def skipped(project: Project, domain: Domain, env: Environment, regions: list[str] | None = None,
            technologies: list[str] | None = None) -> list[str]:
    """One line per technology (or region) of the domain a run with these params does not touch, and why."""
    out: list[str] = []
    all_regions = [r.name for r in project.regions_of(domain, env)]
    chosen = [r for r in all_regions if regions is None or r in regions]
    for r in all_regions:
        if r not in chosen:
            out.append(f"region {r}: not selected in this run (param regions)")
    for tech in domain.technology_order():
        reasons: dict[str, list[str]] = {}
        for r in chosen:
            why = why_not(env, r, tech)
            if why is None and technologies is not None and tech not in technologies:
                why = "not selected in this run (param technologies)"
            if why is not None:
                reasons.setdefault(why, []).append(r)
        for why, where in reasons.items():
            scope = "" if len(where) == len(chosen) else f" in {', '.join(where)}"
            out.append(f"{tech}{scope}: {why}")
    return out


def left_out_files(env: Environment, domain: str) -> list[str]:
    """One line per file of ``domain`` the environment's specs leave out (``left_out``), with why: the
    file is absent, so the plan cannot show it; without this line nobody would know it was meant to run."""
    prefix = f"{domain}/"
    return [f"{key.removeprefix(prefix)}: left out of these specs: {why}"
            for key, why in sorted(env.left_out.items()) if key.startswith(prefix) and key.count("/") >= 2]
