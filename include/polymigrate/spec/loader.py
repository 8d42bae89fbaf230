"""Load ``migration_specs/`` into a ``Project``, collecting every problem with file and line.

A broken file never stops the others from loading: a broken domain lands in
``Project.broken_domains`` and the rest of the project is usable (DAGs, plans) as usual. Files are
read through ``spec.reading``: bounded size, depth and alias expansion, nothing outside the tree.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from polymigrate import TECHNOLOGIES
from polymigrate.errors import Problem
from polymigrate.credential_patterns import URL_WITH_PASSWORD, token_in
from polymigrate.spec.models import Domain, Environment, Project
from polymigrate.spec.reading import inside, read_yaml

DEFAULTS_FILE = "_defaults.yaml"
ENVIRONMENTS_DIR = "environments"
DOMAIN_FILE = "domain.yaml"

_SECRET_KEY = re.compile(r"(^|_|-)(password|passwd|pwd|secret|token|api_?key|private_?key|credentials?|auth)$", re.I)
_BEARER = re.compile(r"^bearer\s+\S{8,}", re.I)  # a whole value that is an Authorization header


def _is_token(value: str) -> bool:
    """Values that are credentials whatever key they sit under: bearer tokens, JWTs, cloud/SaaS keys."""
    return bool(_BEARER.search(value) or token_in(value))
_CREDENTIAL_HINT = "store credentials in an Airflow connection (or the secrets backend) and reference its connection id"


def load_project(root: str | Path) -> Project:
    """Load every environment and domain under ``root``; never raises for bad input."""
    root = Path(root)
    project = Project(root=root)
    if not root.is_dir():
        project.problems.append(Problem(str(root), "spec folder not found", hint="pass the folder that holds environments/ and the domain folders"))
        return project
    _load_environments(root, project)
    nodes = _load_domains(root, project)
    _check_references(project, nodes)
    _scan_other_files(root, project)
    return project


def _scan_other_files(root: Path, project: Project) -> None:
    """Other YAML files at the top (e.g. approvers.yaml) are specs too: no credentials in them either."""
    for path in sorted(root.glob("*.y*ml")):
        problems: list[Problem] = []
        _, node = _read_yaml(path, problems, root)
        project.problems.extend(problems + _credential_problems(node, str(path)))


# --- YAML with line numbers -------------------------------------------------------------------

def _read_yaml(path: Path, problems: list[Problem], root: Path | None = None) -> tuple[Any, yaml.Node | None]:
    data, node, found = read_yaml(path, root)
    problems.extend(found)
    return data, node


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Line of the deepest node along a pydantic error location."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    cur = node
    for key in loc:
        if isinstance(cur, yaml.MappingNode):
            for k, v in cur.value:
                if str(k.value) == str(key):
                    cur, line = v, k.start_mark.line + 1
                    break
            else:
                break
        elif isinstance(cur, yaml.SequenceNode) and isinstance(key, int) and key < len(cur.value):
            cur = cur.value[key]
            line = cur.start_mark.line + 1
        else:
            break
    return line


def _validation_problems(exc: ValidationError, file: str, node: yaml.Node | None, domain: str | None = None) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
        where = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            msg, hint = f"unknown key '{where}'", "remove it or check its spelling against the documented keys"
        elif kind == "missing":
            msg, hint = f"missing required key '{where}'", "add it"
        else:
            msg = f"{where}: {err['msg']}"
            hint = f"got {_safe_repr(err.get('input'))}" if not isinstance(err.get("input"), (dict, list)) else None
        out.append(Problem(file, msg, line=_line_of(node, loc), hint=hint, domain=domain))
    return out


def _safe_repr(value: Any) -> str:
    """repr for error messages, never echoing something that looks like a credential."""
    text = repr(value)
    if URL_WITH_PASSWORD.search(text) or _is_token(str(value)):
        return "(a value that looks like a credential; not shown)"
    return text


def _credential_problems(node: yaml.Node | None, file: str, domain: str | None = None) -> list[Problem]:
    out: list[Problem] = []

    def walk(n: yaml.Node) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and _SECRET_KEY.search(str(k.value)) \
                        and isinstance(v, yaml.ScalarNode) and str(v.value).strip():
                    out.append(Problem(file, f"inline credential under '{k.value}'", line=k.start_mark.line + 1,
                                       hint=_CREDENTIAL_HINT, domain=domain))
                    continue  # one finding per value, and never its text
                walk(v)
        elif isinstance(n, yaml.SequenceNode):
            for item in n.value:
                walk(item)
        elif isinstance(n, yaml.ScalarNode) and URL_WITH_PASSWORD.search(str(n.value)):
            out.append(Problem(file, "URI with an inline password", line=n.start_mark.line + 1,
                               hint=_CREDENTIAL_HINT, domain=domain))
        elif isinstance(n, yaml.ScalarNode) and _is_token(str(n.value)):
            out.append(Problem(file, "value looks like a token or key", line=n.start_mark.line + 1,
                               hint=_CREDENTIAL_HINT, domain=domain))

    if node is not None:
        walk(node)
    return out


def _deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


# --- environments -----------------------------------------------------------------------------

def _load_environments(root: Path, project: Project) -> None:
    env_dir = root / ENVIRONMENTS_DIR
    if not env_dir.is_dir():
        project.problems.append(Problem(str(env_dir), "no environments/ folder",
                                        hint="create environments/<name>.yaml for each environment"))
        return
    defaults: dict = {}
    defaults_path = env_dir / DEFAULTS_FILE
    if defaults_path.exists():
        data, node = _read_yaml(defaults_path, project.problems, root)
        project.problems.extend(_credential_problems(node, str(defaults_path)))
        if data is not None and not isinstance(data, dict):
            project.problems.append(Problem(str(defaults_path), "must be a mapping of environment keys", line=1))
        elif isinstance(data, dict):
            defaults = data
    for path in sorted(env_dir.glob("*.y*ml")):
        if path.name.startswith("_"):
            continue
        problems: list[Problem] = []
        data, node = _read_yaml(path, problems, root)
        problems.extend(_credential_problems(node, str(path)))
        if data is not None and not isinstance(data, dict):
            problems.append(Problem(str(path), "an environment file must be a mapping", line=1))
        elif isinstance(data, dict) and not problems:
            if isinstance(data.get("regions"), list) and all(isinstance(r, str) for r in data["regions"]):
                # `regions: [a, b]` is shorthand for picking regions from the defaults unchanged
                data = {**data, "regions": {r: None for r in data["regions"]}}
            merged = _deep_merge(defaults, data)
            if isinstance(data.get("regions"), dict) and isinstance(defaults.get("regions"), dict):
                # an environment lists its own regions; defaults only fill in each region's settings
                merged["regions"] = {k: _deep_merge(defaults["regions"].get(k) or {}, v) if isinstance(v, dict)
                                     else (defaults["regions"].get(k) if v is None else v)
                                     for k, v in data["regions"].items()}
            merged.setdefault("name", path.stem)
            merged["path"] = str(path)
            regions = merged.get("regions")
            if isinstance(regions, dict):
                merged["regions"] = {k: {"name": k, **(v or {})} if isinstance(v, (dict, type(None))) else v
                                     for k, v in regions.items()}
            try:
                env = Environment.model_validate(merged)
            except ValidationError as exc:
                problems.extend(_validation_problems(exc, str(path), node))
            else:
                if env.name != path.stem:
                    problems.append(Problem(str(path), f"name '{env.name}' differs from the file name '{path.stem}'",
                                            line=_line_of(node, ("name",)), hint=f"rename the file to {env.name}.yaml or fix the name"))
                else:
                    project.environments[env.name] = env
                    if env.policy.schedule and env.policy.approvals.required:
                        project.notes.append(Problem(
                            str(path), f"scheduled ({env.policy.schedule}) but every run waits for "
                            f"{env.policy.approvals.required} approval(s): unanswered, it holds the DAG's only active run",
                            line=_line_of(node, ("policy", "schedule")),
                            hint="approvals.required: 0 for an unattended rehearsal, or no schedule"))
        project.problems.extend(problems)
    if not project.environments and not any(p.file.startswith(str(env_dir)) for p in project.problems):
        project.problems.append(Problem(str(env_dir), "no environment defined", hint="add environments/development.yaml"))


# --- domains ----------------------------------------------------------------------------------

def _load_domains(root: Path, project: Project) -> dict[str, yaml.Node | None]:
    """Load every domain folder; returns each loaded domain's YAML node, for line numbers later."""
    nodes: dict[str, yaml.Node | None] = {}
    real_root = root.resolve()
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name == ENVIRONMENTS_DIR or folder.name.startswith((".", "_")):
            continue
        spec = folder / DOMAIN_FILE
        if not inside(folder.resolve(), real_root):
            _broken(project, folder.name, [Problem(str(folder), f"is a symbolic link to {folder.resolve()}, which "
                                                   f"leaves the spec tree {root}", domain=folder.name,
                                                   hint="move the domain into the spec tree")])
            continue
        if not spec.exists() and not spec.is_symlink():
            project.notes.append(Problem(str(folder), "folder has no domain.yaml; ignored",
                                         hint="add domain.yaml to make it a domain"))
            continue
        try:
            loaded = _load_domain(root, folder, spec, project)
        except Exception as exc:  # noqa: BLE001  a bug on one hostile domain must not hide the others
            loaded = [Problem(str(spec), f"could not be loaded ({type(exc).__name__}: {exc})"[:500],
                              domain=folder.name, hint="report this with the file; the other domains are unaffected")]
        if isinstance(loaded, list):
            _broken(project, folder.name, loaded)
        else:
            project.domains[folder.name], nodes[folder.name] = loaded
    return nodes


def _broken(project: Project, name: str, problems: list[Problem]) -> None:
    project.broken_domains[name] = [p if p.domain else Problem(p.file, p.message, p.line, p.hint, name)
                                    for p in problems]
    project.problems.extend(project.broken_domains[name])


def _load_domain(root: Path, folder: Path, spec: Path, project: Project) -> list[Problem] | tuple[Domain, Any]:
    """One domain folder: its problems, or (domain, YAML node for line numbers)."""
    problems: list[Problem] = []
    data, node = _read_yaml(spec, problems, root)
    problems.extend(_credential_problems(node, str(spec), domain=folder.name))
    domain = None
    if data is None and not problems:
        data = {}
    if data is not None and not isinstance(data, dict):
        problems.append(Problem(str(spec), "domain.yaml must be a mapping", line=1, domain=folder.name))
    elif isinstance(data, dict):
        data = {**data, "path": str(folder)}
        data.setdefault("name", folder.name)
        try:
            domain = Domain.model_validate(data)
        except ValidationError as exc:
            problems.extend(_validation_problems(exc, str(spec), node, domain=folder.name))
    # The folder is the domain's identity (DAG ids, `--domain`, depends_on all use it), so a
    # different `name:` would make the same domain answer to two names.
    name = folder.name
    if domain and domain.name != folder.name:
        problems.append(Problem(str(spec), f"name '{domain.name}' differs from the folder name '{folder.name}'",
                                line=_line_of(node, ("name",)),
                                hint=f"remove 'name:' (the folder names the domain) or rename the folder to {domain.name}",
                                domain=name))
    if domain:
        problems.extend(_domain_folder_problems(domain, spec, node, project))
    if problems:
        return problems
    return domain, node  # type: ignore[return-value]


def _domain_folder_problems(domain: Domain, spec: Path, node: yaml.Node | None, project: Project) -> list[Problem]:
    """Technology folders: declared ones must exist; undeclared ones are reported as a note."""
    problems = []
    for tech in domain.technologies:
        if not domain.technology_dir(tech).is_dir():
            problems.append(Problem(str(spec), f"technology '{tech}' has no folder {domain.technology_dir(tech)}",
                                    line=_line_of(node, ("technologies", tech)),
                                    hint=f"create {domain.technology_dir(tech)}/ or remove the technology", domain=domain.name))
    for tech in TECHNOLOGIES:
        folder = Path(domain.path) / tech
        if tech not in domain.technologies and folder.is_dir() and \
                any(f.is_file() and not f.name.startswith(".") for f in folder.rglob("*")):
            project.notes.append(Problem(str(folder), f"'{tech}' is not under 'technologies:' in {spec.name}; its files are ignored",
                                         hint=f"add '{tech}:' under 'technologies:' to run them", domain=domain.name))
    if not domain.technologies:
        project.notes.append(Problem(str(spec), "declares no technologies; nothing to migrate",
                                     hint="add e.g. 'technologies: {postgresql: {schema: ...}}'", domain=domain.name))
    return problems


def _check_references(project: Project, nodes: dict[str, yaml.Node | None] | None = None) -> None:
    """Cross-file checks: environments and regions named by domains, depends_on, cycles."""
    nodes = nodes or {}

    def fail(domain: Domain, problem: Problem) -> None:
        project.broken_domains.setdefault(domain.name, []).append(problem)
        project.problems.append(problem)

    def line(name: str, *loc) -> int | None:
        return _line_of(nodes.get(name), loc)

    spec_of = {d.name: str(Path(d.path) / DOMAIN_FILE) for d in project.domains.values()}
    known = set(project.domains) | set(project.broken_domains)
    env_dir = project.root / ENVIRONMENTS_DIR
    all_regions = {r for e in project.environments.values() for r in e.regions}
    for d in list(project.domains.values()):
        f = spec_of[d.name]
        for i, env in enumerate(d.environments or []):
            if env not in project.environments:
                broken = any(p.file.startswith(str(env_dir / env) + ".y") for p in project.problems)
                fail(d, Problem(f, f"environment '{env}' " + ("is broken (see its own errors)" if broken else "is not defined"),
                                line=line(d.name, "environments", i),
                                hint=f"fix environments/{env}.yaml" if broken else
                                f"add environments/{env}.yaml or remove it from 'environments'", domain=d.name))
        for i, r in enumerate(d.regions or []):
            if r not in all_regions:
                fail(d, Problem(f, f"region '{r}' exists in no environment", line=line(d.name, "regions", i),
                                hint=f"one of {sorted(all_regions)}", domain=d.name))
        canary = d.rollout.canary_region if d.rollout else None
        if canary and canary not in (d.regions or all_regions):
            fail(d, Problem(f, f"rollout.canary_region '{canary}' is not one of the domain's regions",
                            line=line(d.name, "rollout", "canary_region"),
                            hint=f"one of {sorted(d.regions or all_regions)}", domain=d.name))
        for i, dep in enumerate(d.depends_on):
            if dep not in known:
                fail(d, Problem(f, f"depends_on '{dep}' is not a domain", line=line(d.name, "depends_on", i),
                                hint=f"one of {sorted(known - {d.name})}", domain=d.name))
            elif dep in project.broken_domains:
                fail(d, Problem(f, f"depends_on '{dep}', which is broken", line=line(d.name, "depends_on", i),
                                hint=f"fix domain '{dep}' first", domain=d.name))
    # cycles: a domain on a cycle cannot be ordered, so every member is broken
    graph = {d.name: [x for x in d.depends_on if x in project.domains] for d in project.domains.values()}
    for cycle in _cycles(graph):
        text = f"'{cycle[0]}' depends on itself" if len(cycle) == 1 else "between " + ", ".join(f"'{c}'" for c in cycle)
        for name in cycle:
            if name in project.domains:
                fail(project.domains[name], Problem(spec_of[name], f"depends_on cycle {text}",
                                                    line=line(name, "depends_on"),
                                                    hint="remove one of the dependencies", domain=name))
    for name in project.broken_domains:
        project.domains.pop(name, None)


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components of size > 1 (or self loops), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, []):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def dependency_order(project: Project, roots: list[str] | None = None) -> list[str]:
    """Domains ordered so each comes after what it depends on: all of them, or ``roots`` and
    everything they depend on, transitively."""
    seen: set[str] = set()
    out: list[str] = []

    def visit(name: str) -> None:
        if name in seen or name not in project.domains:
            return
        seen.add(name)
        for dep in project.domains[name].depends_on:
            visit(dep)
        out.append(name)

    for name in sorted(project.domains) if roots is None else roots:
        visit(name)
    return out
