"""pyproject.toml's dependencies say what the code imports, and the provider entry point says what
Airflow's provider manager accepts (its own JSON schema). The built wheel is tested in
tests/integration/test_wheel.py."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def dist_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


CORE = {dist_name(r) for r in PROJECT["dependencies"]}
EXTRAS = {extra: {dist_name(r) for r in reqs} for extra, reqs in PROJECT["optional-dependencies"].items()}
EXTRA_DISTS = set().union(*EXTRAS.values()) - {PROJECT["name"]}  # `all` names the package itself
MODULE_DISTS = {mod: {d.lower().replace("_", "-") for d in dists} for mod, dists in md.packages_distributions().items()}


def closure(dists: set[str]) -> set[str]:
    """``dists`` and everything they require, as installed here (markers ignored: an over-approximation
    is fine for 'may this import rely on it')."""
    seen, todo = set(), list(dists)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            todo += [dist_name(r) for r in md.requires(name) or []]
        except md.PackageNotFoundError:
            pass
    return seen


def module_level_imports(path: Path) -> set[str]:
    """Top-level names of what a module imports when it is imported (not inside functions)."""
    tree = ast.parse(path.read_text(), str(path))
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def third_party(name: str) -> bool:
    return name not in sys.stdlib_module_names and name not in ("polymigrate", "polymigrate_airflow", "__future__")


def undeclared(path: Path, allowed: set[str]) -> list[str]:
    bad = []
    for name in sorted(filter(third_party, module_level_imports(path))):
        dists = MODULE_DISTS.get(name)
        assert dists, f"{path.relative_to(ROOT)} imports {name}, which no installed distribution provides"
        if not dists & allowed:
            bad.append(f"{path.relative_to(ROOT)}: {name} ({', '.join(sorted(dists))})")
    return bad


def test_the_core_declares_what_every_core_module_imports_at_module_level():
    core = closure(CORE)
    bad = []
    for path in (ROOT / "include" / "polymigrate").rglob("*.py"):
        parts = path.relative_to(ROOT / "include" / "polymigrate").parts
        if parts[0] == "adapters" and len(parts) > 2 and parts[1] in EXTRAS:
            # a technology's own package may import its driver: that extra is what installs it
            bad += undeclared(path, core | closure(EXTRAS[parts[1]]))
        elif parts[0] != "adapters" or len(parts) == 2 and parts[1] in ("__init__.py", "base.py"):
            bad += undeclared(path, core)
    assert not bad, "module-level imports outside [project] dependencies:\n" + "\n".join(bad)


def test_the_airflow_layer_imports_only_the_core_and_the_airflow_extra():
    allowed = closure(CORE | EXTRAS["airflow"])
    bad = [b for path in (ROOT / "plugins" / "polymigrate_airflow").rglob("*.py") for b in undeclared(path, allowed)]
    assert not bad, "\n".join(bad)


def test_validate_runs_on_the_core_alone():
    """`polymigrate validate` of the sample tree (all four technologies) with every driver an extra brings
    made unimportable, as in an install of the bare package."""
    blocked = sorted(mod for mod, dists in MODULE_DISTS.items()
                     if dists & (EXTRA_DISTS - closure(CORE)) and mod.isidentifier())
    assert {"pymongo", "redis", "opensearchpy", "great_expectations", "airflow"} <= set(blocked), blocked
    code = ("import sys\n"
            f"for m in {blocked!r}: sys.modules[m] = None\n"
            "from polymigrate.cli import main\n"
            f"sys.argv = ['polymigrate', 'validate', {str(ROOT / 'migration_specs')!r}]\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout


def test_all_is_every_extra_but_test():
    (self_ref,) = PROJECT["optional-dependencies"]["all"]
    named = set(re.fullmatch(r"polymigrate\[([a-z,]+)\]", self_ref).group(1).split(","))
    assert named == set(EXTRAS) - {"all", "test"}


def test_requirements_install_the_package_with_every_extra():
    """requirements.txt adds nothing of its own: pyproject.toml is the one list."""
    lines = [ln.strip() for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines == ["-e .[all,test]"]


def test_every_declared_distribution_is_pinned_by_the_constraints():
    pinned = {dist_name(ln) for ln in (ROOT / "constraints.txt").read_text().splitlines() if "==" in ln}
    declared = CORE | EXTRA_DISTS
    assert not declared - pinned, f"not in constraints.txt: {sorted(declared - pinned)}"


def provider_info() -> dict:
    (ep,) = [e for e in md.entry_points(group="apache_airflow_provider") if e.value.startswith("polymigrate_airflow")]
    assert PYPROJECT["project"]["entry-points"]["apache_airflow_provider"]["provider_info"] == ep.value
    return ep.load()()


def test_provider_info_passes_airflows_schema_and_names_this_distribution():
    import jsonschema
    from airflow._shared.providers_discovery.providers_discovery import _read_schema_from_resources_or_local_file

    info = provider_info()
    jsonschema.validate(info, _read_schema_from_resources_or_local_file("provider_info.schema.json"))
    # the provider manager refuses an entry whose package-name is not the installed distribution's
    assert info["package-name"] == PROJECT["name"]
    assert info["versions"] == [md.version(PROJECT["name"])]
    json.dumps(info)


@pytest.mark.parametrize("module", [m for entry in provider_info()["operators"] for m in entry["python-modules"]])
def test_provider_operator_modules_define_operators(module):
    from airflow.sdk import BaseOperator

    mod = importlib.import_module(module)
    ops = [v for v in vars(mod).values()
           if isinstance(v, type) and issubclass(v, BaseOperator) and v.__module__ == module]
    assert ops, f"{module} is listed as operators in the provider info but defines none"
