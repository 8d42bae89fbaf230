"""The import graph of include/ and plugins/: no cycles (imports inside functions count, since they
hide a cycle rather than remove it; ``if TYPE_CHECKING:`` imports do not run and do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"polymigrate": ROOT / "include" / "polymigrate", "polymigrate_airflow": ROOT / "plugins" / "polymigrate_airflow"}


def modules() -> dict[str, Path]:
    out = {}
    for root in PACKAGES.values():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    return skip


def import_graph() -> dict[str, set[str]]:
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [resolve(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else resolve(node.module)
                           for a in node.names]
            graph[mod] |= {t for t in targets if t and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_include_or_plugins():
    assert cycles(import_graph()) == []


def test_the_checker_finds_a_cycle_hidden_in_a_function():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_core_imports_nothing_of_the_airflow_layer():
    graph = import_graph()
    leaks = {m: sorted(t for t in ts if t.startswith("polymigrate_airflow")) for m, ts in graph.items()
             if m.startswith("polymigrate.")}
    assert {m: t for m, t in leaks.items() if t} == {}


def test_operators_stay_thin():
    lines = (PACKAGES["polymigrate_airflow"] / "operators.py").read_text().count("\n")
    assert lines < 300, f"operators.py has {lines} lines: policy belongs in polymigrate.commands"


# The core must be importable (DAG parsing, the CLI's lint and plan, the scheduler) without loading a
# database driver: parse time stays small, and a machine without one technology's driver still runs
# the others. These modules load their driver at import time by design; everything else must not.
DRIVERS = ("psycopg", "pymongo", "redis", "opensearchpy", "elasticsearch")
DRIVER_MODULES = {
    # each technology's connection, ledger, lock and step code (Elasticsearch/OpenSearch speaks HTTP
    # through polymigrate's own client, so none of its modules is here)
    *(f"polymigrate.adapters.postgresql.{m}" for m in (
        "adapter", "backfill", "checks", "errors", "flyway", "ledger", "leftovers", "lock", "session", "snapshot",
        "steps")),
    *(f"polymigrate.adapters.mongodb.{m}" for m in (
        "adapter", "checks", "lease", "ledger", "runner", "server", "transform")),
    *(f"polymigrate.adapters.redis.{m}" for m in ("adapter", "lease", "scripts")),
    # the audit trail is a PostgreSQL store; the package's __init__ imports it, so every audit module
    # brings psycopg
    "polymigrate.audit", "polymigrate.audit.store", "polymigrate.audit.chain", "polymigrate.audit.compliance",
    "polymigrate.audit.history", "polymigrate.audit.links", "polymigrate.audit.matrix", "polymigrate.audit.report",
    "polymigrate.audit.trend",
}


def _drivers_loaded_by(names: list[str]) -> list[str]:
    """The drivers in ``sys.modules`` of a fresh interpreter after importing ``names``."""
    import json
    import subprocess
    import sys

    code = ("import importlib, json, sys\n"
            f"for m in {names!r}: importlib.import_module(m)\n"
            f"print(json.dumps(sorted(d for d in {DRIVERS!r} if d in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_core_loads_no_database_driver_at_import_time():
    core = sorted(m for m in modules() if m.startswith("polymigrate.") or m == "polymigrate")
    core = [m for m in core if m not in DRIVER_MODULES]
    assert _drivers_loaded_by(core) == [], (
        "some module of include/polymigrate loads a database driver at import time: "
        + ", ".join(f"{m} → {d}" for m in core for d in _drivers_loaded_by([m]))
        + "; import the driver inside the function that connects, or, for an adapter's driver module, "
          "add it to DRIVER_MODULES")


def test_the_driver_check_sees_a_driver_and_lists_only_real_modules():
    assert _drivers_loaded_by(["polymigrate.adapters.postgresql.session"]) == ["psycopg"]
    assert DRIVER_MODULES <= set(modules()), "DRIVER_MODULES names a module that no longer exists"
