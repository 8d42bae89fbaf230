"""Compile a ``Project`` into one ``DagBlueprint`` per (domain, environment): plain data, no Airflow.

As astronomer-cosmos does, the shape of every DAG (task ids, operator names, arguments,
dependencies, region groups, rollout) is decided here and unit-tested without Airflow; a single
renderer in ``polymigrate_airflow`` turns blueprints into DAG objects.

The shape of a healthy DAG::

    validate >> approve >> plan >> <region groups per rollout>
    region group: <technology tasks in domain order> >> verify

When the domain spec declares release phases (``technologies.<t>.phases``, docs/phases.md), a
region group runs phase-major across technologies instead::

    expand_<tech>… >> migrate_<tech>… >> verify_before_contract [>> approve_contract] >> contract_<tech>… >> verify

(the declared phases of each technology, ``expand`` for one that declares none; ``contract`` only
after the earlier phases verified, and, with ``policy.contract_approval``, a separate approval in
each region). Domains without phases keep the shape above exactly.

A broken domain (or a domain in a broken environment file) still gets a DAG, holding only
``validate``: that task fails naming every problem with file and line, and ``doc_md`` lists them,
so one bad file never hides the other DAGs nor silently drops its own.

Parse-time budget: this module reads spec YAML only (through ``load_project``) and lists migration
file *names* for the description; it opens no migration file (the phases come from the domain spec,
and validate refuses a file whose phase the spec does not declare) and never touches a database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polymigrate.adapters import TECHNOLOGIES
from polymigrate.catalog import PHASES
from polymigrate.errors import Problem
from polymigrate.spec.loader import ENVIRONMENTS_DIR, load_project
from polymigrate.spec.models import Domain, Environment, Project, Rollout, slug
from polymigrate.dag_doc import dag_doc as _doc

DAG_PREFIX = "migrate"
START_DATE = "2024-01-01"  # fixed, so a scheduled DAG never backfills from "now" on each parse

# Operators by dotted path (as cosmos names them): the renderer imports exactly these, so a name
# without its class fails when the DAG file is built, never as a silent stand-in at run time.
_OPS = "polymigrate_airflow.operators"
OPERATORS = {
    "validate": f"{_OPS}.ValidateOperator",
    "approve": "polymigrate_airflow.approval.ApproveOperator",
    "approve_contract": "polymigrate_airflow.approval.ApproveContractOperator",
    "plan": f"{_OPS}.PlanOperator",
    "verify": f"{_OPS}.VerifyOperator",
    "drift": f"{_OPS}.DriftOperator",
}
DRIFT_PREFIX = "drift"
MIGRATION_OPERATORS = {key: f"{_OPS}.{t.operator}" for key, t in TECHNOLOGIES.items()}

# Trigger rules (Airflow's names, kept as strings so the core stays Airflow-free).
ALL_SUCCESS = "all_success"
NONE_FAILED = "none_failed"  # a region skipped by the `regions` param must not skip the next one
ALL_DONE = "all_done"        # sequential rollout without halt: the next region runs whatever happened


@dataclass(frozen=True)
class TaskBlueprint:
    """One task: its id inside its group, the operator to render, and its arguments."""

    task_id: str
    operator: str
    arguments: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    upstream: tuple[str, ...] = ()  # full task ids
    trigger_rule: str = ALL_SUCCESS
    retries: int | None = None  # None: the DAG default
    queue: str | None = None  # None: Airflow's default queue (any worker)

    @property
    def full_id(self) -> str:
        """The id Airflow shows (``group.task`` inside a TaskGroup)."""
        return f"{self.group}.{self.task_id}" if self.group else self.task_id


@dataclass(frozen=True)
class RegionGroup:
    name: str
    title: str
    technologies: tuple[str, ...]


@dataclass(frozen=True)
class DagBlueprint:
    """Everything the renderer needs to build one DAG; JSON-able."""

    dag_id: str
    domain: str
    environment: str
    specs_root: str
    description: str
    doc_md: str
    tags: tuple[str, ...]
    owners: tuple[str, ...]
    schedule: str | None
    params: dict[str, dict[str, Any]]
    default_args: dict[str, Any]
    tasks: tuple[TaskBlueprint, ...]
    groups: tuple[RegionGroup, ...] = ()
    rollout: dict[str, Any] = field(default_factory=dict)
    max_active_runs: int = 1
    start_date: str = START_DATE
    problems: tuple[str, ...] = ()
    start_paused: bool | None = None  # None: Airflow's default (dags_are_paused_at_creation)

    @property
    def broken(self) -> bool:
        return bool(self.problems)

    def task(self, full_id: str) -> TaskBlueprint:
        for t in self.tasks:
            if t.full_id == full_id:
                return t
        raise KeyError(f"{self.dag_id} has no task {full_id!r}; tasks: {[t.full_id for t in self.tasks]}")

    def downstream(self, full_id: str) -> list[str]:
        return [t.full_id for t in self.tasks if full_id in t.upstream]


def dag_id(domain: str, environment: str) -> str:
    """``migrate__<domain_slug>__<environment>``; any character Airflow refuses becomes ``_``."""
    clean = lambda s: re.sub(r"[^A-Za-z0-9_.-]", "_", slug(s))  # noqa: E731
    return f"{DAG_PREFIX}__{clean(domain)}__{clean(environment)}"


def compile_project(root: str | Path, project: Project | None = None, only: str | None = None) -> list[DagBlueprint]:
    """Every DAG of the project: one per (domain, environment), broken ones included; with ``only``
    (a DAG id), that DAG alone, or none (a task process needs the DAG it runs, nothing more)."""
    root = Path(root).resolve()
    project = project or load_project(root)
    out: list[DagBlueprint] = []
    env_broken = _broken_environment_files(project)
    wanted = lambda domain, env: only is None or dag_id(domain, env) == only  # noqa: E731
    for domain in project.domains.values():
        envs = [env for env in project.environments_of(domain) if wanted(domain.name, env.name)]
        out += [compile_dag(project, domain, env, root) for env in envs]
        for env_name, problems in env_broken.items():
            if (domain.environments is None or env_name in domain.environments) and wanted(domain.name, env_name):
                out.append(broken_dag(domain.name, env_name, problems, root, owners=domain.owners))
    for name, problems in project.broken_domains.items():
        envs = sorted(set(project.environments) | set(env_broken))
        for env_name in envs:
            if wanted(name, env_name):
                out.append(broken_dag(name, env_name, problems + env_broken.get(env_name, []), root))
    return sorted(out, key=lambda b: b.dag_id)


def _broken_environment_files(project: Project) -> dict[str, list[Problem]]:
    """Environment files that failed to load, by file stem (the environment's name)."""
    out: dict[str, list[Problem]] = {}
    for p in project.problems:
        path = Path(p.file)
        if path.parent.name == ENVIRONMENTS_DIR and path.suffix in (".yaml", ".yml") \
                and not path.name.startswith("_") and path.stem not in project.environments:
            out.setdefault(path.stem, []).append(p)
    defaults = [p for p in project.problems if Path(p.file).name.startswith("_") and Path(p.file).parent.name == ENVIRONMENTS_DIR]
    if defaults:  # a broken _defaults.yaml breaks every environment
        for name in set(out) | set(project.environments):
            out.setdefault(name, []).extend(defaults)
    return out


def _params(regions: list[str], technologies: list[str], override: bool = False,
            default_technologies: list[str] | None = None, unserved: list[str] = ()) -> dict[str, dict[str, Any]]:
    """The trigger form; ``override`` adds the emergency override where approvals gate the run.

    ``default_technologies``: what a run selects unless someone chooses otherwise, i.e. what the
    environment serves, so a scheduled run never asks for a target it cannot reach.
    """
    default_techs = list(default_technologies if default_technologies else technologies)
    techs_help = "Technologies to migrate in this run; the others are skipped."
    if unserved:
        techs_help += " Not selected by default: " + "; ".join(unserved) + "."
    params = {
        "dry_run": {"default": False, "type": "boolean", "title": "Dry run",
                    "description": "Plan and report what would run; change nothing."},
        "target_version": {"default": None, "type": ["null", "string"], "title": "Target version",
                           "description": "Apply up to this version only (e.g. 1.4); empty: everything pending."},
        "regions": {"default": list(regions), "type": "array", "title": "Regions", "minItems": 1,
                    "items": {"type": "string", "enum": list(regions)}, "examples": list(regions),
                    "description": "Regions to migrate in this run; the others are skipped."},
        "technologies": {"default": default_techs, "type": "array", "title": "Technologies", "minItems": 1,
                         "items": {"type": "string", "enum": list(technologies)}, "examples": list(technologies),
                         "description": techs_help},
        "allow_out_of_order": {"default": False, "type": "boolean", "title": "Allow out of order",
                               "description": "Apply a pending version older than the newest applied one."},
    }
    if override:
        params["emergency_override"] = {
            "default": False, "type": "boolean", "title": "Emergency override",
            "description": "Run what staging has not confirmed (and changes the policy would refuse). Needs the "
                           "stricter approval and a reason; recorded in the audit trail."}
        params["emergency_reason"] = {
            "default": None, "type": ["null", "string"], "title": "Emergency reason",
            "description": "Required with the override: why (e.g. the incident id). Shown to the approvers."}
    return params


def _default_args(env: Environment, owners: list[str]) -> dict[str, Any]:
    p = env.policy
    return {"owner": ", ".join(owners) or "polymigrate", "retries": p.retries,
            "retry_delay_seconds": p.retry_delay_seconds, "retry_exponential_backoff": True}


def compile_dag(project: Project, domain: Domain, env: Environment, root: Path) -> DagBlueprint:
    """The blueprint of one healthy (domain, environment) DAG."""
    from polymigrate.targets import default_technologies, served, skipped

    regions = project.regions_of(domain, env)
    techs = domain.technology_order()
    rollout = project.rollout_of(domain, env)
    declared = served(project, domain, env, declared_only=True)  # the DAG's shape follows the spec only
    defaults = default_technologies(project, domain, env)
    skips = skipped(project, domain, env)
    unserved = [line for line in skips if line.split(":")[0].split(" ")[0] not in defaults]  # whole technologies
    base = {"specs_root": str(root), "domain": domain.name, "environment": env.name}
    tasks: list[TaskBlueprint] = [
        TaskBlueprint("validate", OPERATORS["validate"], dict(base), retries=0),
        TaskBlueprint("approve", OPERATORS["approve"], dict(base), upstream=("validate",), retries=0),
        TaskBlueprint("plan", OPERATORS["plan"], dict(base), upstream=("approve",)),
    ]
    groups = [RegionGroup(r.name, r.title, tuple(declared[r.name])) for r in regions]
    entry_upstream = _region_entries([g.name for g in groups], rollout)
    phases = domain.declared_phases()  # the spec's, never the files' (validate holds the files to it)
    for g in groups:
        queue = env.regions[g.name].queue  # only workers that reach the region's targets take its tasks
        previous: tuple[str, ...] = ()
        steps: list[tuple[str | None, str]] = [(None, tech) for tech in g.technologies] if phases is None else \
            [(ph, tech) for ph in PHASES for tech in g.technologies if ph in phases[tech]]
        for i, (phase, tech) in enumerate(steps):
            if i == 0:
                after, rule = entry_upstream[g.name]
            else:
                after, rule = previous, NONE_FAILED
            if phase == "contract" and (i == 0 or steps[i - 1][0] != "contract"):
                # contract drops what the old application needs: only after the earlier phases verified
                gate = TaskBlueprint("verify_before_contract", OPERATORS["verify"],
                                     {**base, "region": g.name, "technologies": list(g.technologies), "phase": "migrate"},
                                     group=g.name, upstream=after, trigger_rule=rule, queue=queue)
                tasks.append(gate)
                after, rule = (gate.full_id,), ALL_SUCCESS
                if env.policy.contract_approval:  # production: people confirm before anything is dropped
                    ask = TaskBlueprint("approve_contract", OPERATORS["approve_contract"], {**base, "region": g.name},
                                        group=g.name, upstream=after, trigger_rule=ALL_SUCCESS, retries=0, queue=queue)
                    tasks.append(ask)
                    after = (ask.full_id,)
            args = {**base, "region": g.name, "technology": tech, **({"phase": phase} if phase else {})}
            t = TaskBlueprint(f"{phase}_{tech}" if phase else tech, MIGRATION_OPERATORS[tech], args,
                              group=g.name, upstream=after, trigger_rule=rule, queue=queue)
            tasks.append(t)
            previous = (t.full_id,)
        if g.technologies:
            verify_after, verify_rule = previous, NONE_FAILED
        else:
            verify_after, verify_rule = entry_upstream[g.name]
        tasks.append(TaskBlueprint("verify", OPERATORS["verify"],
                                   {**base, "region": g.name, "technologies": list(g.technologies)},
                                   group=g.name, upstream=verify_after, trigger_rule=verify_rule, queue=queue))
    return DagBlueprint(
        dag_id=dag_id(domain.name, env.name), domain=domain.name, environment=env.name, specs_root=str(root),
        description=(domain.description or f"Migrations of {domain.name}")[:200] + f" ({env.name})",
        doc_md=_doc(domain, env, [g.title for g in groups], techs, rollout, root, skips, phases),
        tags=tuple(dict.fromkeys(["polymigrate", f"domain:{domain.name}", f"env:{env.name}", *techs, *domain.tags])),
        owners=tuple(domain.owners), schedule=env.policy.schedule,
        start_paused=(not env.policy.start_unpaused) if env.policy.schedule else None,
        params=_params([g.name for g in groups], techs, override=env.policy.approvals.required > 0,
                       default_technologies=defaults, unserved=unserved),
        default_args=_default_args(env, domain.owners), tasks=tuple(tasks), groups=tuple(groups),
        rollout={"strategy": rollout.strategy, "halt_on_failure": rollout.halt_on_failure,
                 "order": [g.name for g in _rollout_order(groups, rollout)]},
    )


def _rollout_order(groups: list[RegionGroup], rollout: Rollout) -> list[RegionGroup]:
    if rollout.strategy == "canary" and rollout.canary_region:
        return sorted(groups, key=lambda g: g.name != rollout.canary_region)
    return list(groups)


def _region_entries(names: list[str], rollout: Rollout) -> dict[str, tuple[tuple[str, ...], str]]:
    """For each region, what its first task waits for, and with which trigger rule.

    sequential: each region after the previous one's verify; halt_on_failure keeps Airflow's
    default (a failure upstream stops the rest), otherwise the next region runs regardless.
    parallel: every region right after plan. canary: the canary region first, the rest in parallel
    after the canary's verify (a failed canary always halts: that is what a canary is for).
    """
    after_failure = NONE_FAILED if rollout.halt_on_failure else ALL_DONE
    out: dict[str, tuple[tuple[str, ...], str]] = {}
    if rollout.strategy == "parallel" or len(names) < 2:
        return {n: (("plan",), NONE_FAILED) for n in names}
    if rollout.strategy == "canary":
        first = rollout.canary_region if rollout.canary_region in names else names[0]
        out[first] = (("plan",), NONE_FAILED)
        for n in names:
            if n != first:
                out[n] = ((f"{first}.verify",), NONE_FAILED)
        return out
    previous = None
    for n in names:
        out[n] = ((("plan",), NONE_FAILED) if previous is None else ((f"{previous}.verify",), after_failure))
        previous = n
    return out


def broken_dag(domain: str, environment: str, problems: list[Problem], root: Path,
               owners: list[str] | None = None) -> DagBlueprint:
    """A DAG whose only task, ``validate``, fails naming every problem of the domain."""
    listed = tuple(str(p) for p in problems)
    doc = (f"### {domain} in {environment}: broken specification\n\n"
           "This domain cannot run until these problems are fixed (the `validate` task fails with the same list):\n\n"
           + "\n".join(f"- `{p}`" for p in listed))
    return DagBlueprint(
        dag_id=dag_id(domain, environment), domain=domain, environment=environment, specs_root=str(root),
        description=f"BROKEN: {len(listed)} problem(s) in the specs of {domain}", doc_md=doc,
        tags=("polymigrate", "broken", f"domain:{domain}", f"env:{environment}"), owners=tuple(owners or ()),
        schedule=None, params={}, default_args={"owner": ", ".join(owners or []) or "polymigrate", "retries": 0},
        tasks=(TaskBlueprint("validate", OPERATORS["validate"],
                             {"specs_root": str(root), "domain": domain, "environment": environment}, retries=0),),
        problems=listed,
    )


def drift_dag_id(environment: str) -> str:
    """``drift__<environment>``."""
    return f"{DRIFT_PREFIX}__{_clean(environment)}"


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", slug(name))


def compile_drift(root: str | Path, project: Project | None = None, only: str | None = None) -> list[DagBlueprint]:
    """One ``drift__<environment>`` DAG per environment whose policy has a ``drift_schedule``: a task
    per domain deployed there, side by side (one domain's failure or broken spec never stops the
    others' comparison), each comparing every target with its last recorded snapshot.

    A broken domain keeps its task, which fails naming the problems, as its migrate DAG's validate
    does; an environment whose own file is broken has no drift DAG (its migrate DAGs say why).
    ``only``: as in ``compile_project``.
    """
    root = Path(root).resolve()
    project = project or load_project(root)
    out: list[DagBlueprint] = []
    for env in project.environments.values():
        if not env.policy.drift_schedule or only not in (None, drift_dag_id(env.name)):
            continue
        domains = [d for d in project.domains.values() if env.name in [e.name for e in project.environments_of(d)]]
        names = list(dict.fromkeys([d.name for d in domains] + sorted(project.broken_domains)))
        if not names:
            continue
        tasks = tuple(TaskBlueprint(_clean(name), OPERATORS["drift"],
                                    {"specs_root": str(root), "domain": name, "environment": env.name}, retries=1)
                      for name in names)
        owners = tuple(dict.fromkeys(o for d in domains for o in d.owners))
        allow = {d.name: len(d.drift.allow) for d in domains if d.drift.allow}
        doc = (f"### Drift in {env.name}\n\nEvery night at `{env.policy.drift_schedule}` (UTC), each domain's targets are "
               "snapshotted (PostgreSQL catalog; MongoDB collections, validators and indexes; Elasticsearch mappings, "
               "templates and aliases; Redis key shapes with TTL) and compared with the snapshot recorded after their "
               "last successful run. Differences are recorded as a `drift` audit event (object, what changed, since "
               "when), shown on the audit page and in the next run's approval summary; drift never fails a migration."
               "\n\n- **Domains**: " + ", ".join(names)
               + "\n- **Allowlisted manual objects** (domain.yaml `drift.allow`): "
               + (", ".join(f"{d} {n}" for d, n in allow.items()) or "none")
               + ("\n- **Broken specs** (their task fails naming the problems): " + ", ".join(sorted(project.broken_domains))
                  if project.broken_domains else ""))
        out.append(DagBlueprint(
            dag_id=drift_dag_id(env.name), domain="", environment=env.name, specs_root=str(root),
            description=f"Nightly drift report of {env.name}: live schemas against the last successful run's",
            doc_md=doc, tags=("polymigrate", "drift", f"env:{env.name}"), owners=owners,
            schedule=env.policy.drift_schedule, start_paused=not env.policy.start_unpaused, params={},
            default_args={"owner": ", ".join(owners) or "polymigrate", "retries": 1, "retry_delay_seconds": 300},
            tasks=tasks))
    return sorted(out, key=lambda b: b.dag_id)
