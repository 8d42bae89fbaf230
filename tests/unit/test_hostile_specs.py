"""Hostile spec trees (issue 14, item 3): every input is read in bounded time and memory, the bad
domain is named with file and line, and every other domain still loads.

Each load runs in a child process under a memory ceiling (1 GB of address space) and a hang guard
(60 s, about a hundred times what a load takes): on the code before the fix the alias bomb ran
for minutes and the 10 MB file took 950 MB. Nothing here measures speed; bench/ does.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile_specs import build

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
from polymigrate.catalog import discover_domain
from polymigrate.spec import load_project
p = load_project(sys.argv[1])
catalogs = {n: discover_domain(d) for n, d in p.domains.items()}
print(json.dumps({
    "domains": sorted(p.domains),
    "broken": {n: [str(x) for x in ps] for n, ps in p.broken_domains.items()},
    "catalog_problems": {n: [str(x) for x in c.problems] for n, c in catalogs.items() if c.problems},
    "scripts": {n: sorted(m.script for ms in c.migrations.values() for m in ms) for n, c in catalogs.items()},
}))
"""
HEALTHY = {"common", "courier-services", "social-commerce", "warehousing", "centralized-dashboard"}


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def load(specs: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(specs)], capture_output=True, text=True, timeout=60,
                         preexec_fn=_limit_memory, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.parametrize("kind, domain, needle", [
    ("bomb", "hostile-bomb", "alias"),
    ("deep", "hostile-deep", "nested"),
    ("big", "hostile-big", "MB"),
    ("yaml-dev-zero", "hostile-yaml-zero", "leaves the spec tree"),
    ("fifo", "hostile-fifo", "not a regular file"),
])
def test_a_hostile_domain_yaml_is_named_and_the_other_domains_load(tmp_path, kind, domain, needle):
    result = load(build(tmp_path / "specs", kind))
    assert HEALTHY <= set(result["domains"])
    [problem, *_] = result["broken"][domain]
    assert needle in problem and f"{domain}/domain.yaml" in problem
    if kind in ("bomb", "deep"):
        assert f"{domain}/domain.yaml:" in problem  # with the line


@pytest.mark.parametrize("kind, domain, needle", [
    ("symlink-out", "hostile-link", "leaves the spec tree"),
    ("dev-zero", "hostile-zero", "leaves the spec tree"),
])
def test_a_migration_symlink_leaving_the_tree_is_refused_and_never_read(tmp_path, kind, domain, needle):
    result = load(build(tmp_path / "specs", kind))
    assert HEALTHY <= set(result["domains"])
    [problem] = result["catalog_problems"][domain]
    assert needle in problem and "postgresql/V2__" in problem
    assert result["scripts"][domain] == ["V1__a.sql"]  # the link is not a migration


def test_a_symlink_inside_the_tree_is_still_a_migration(tmp_path):
    specs = build(tmp_path / "specs")
    target = specs / "common" / "postgresql"
    first = sorted(target.rglob("V*.sql"))[0]
    (target / "V900__shared.sql").symlink_to(first)
    result = load(specs)
    assert "V900__shared.sql" in result["scripts"]["common"]


def test_a_recursive_alias_is_refused(tmp_path):
    specs = build(tmp_path / "specs")
    (specs / "common" / "domain.yaml").write_text("description: x\ntags: &t [a, *t]\n")
    result = load(specs)
    assert "alias" in result["broken"]["common"][0]


def test_hostile_approvers_file_is_refused_with_its_line(tmp_path):
    from polymigrate.errors import SpecError
    from polymigrate.spec.approvers import load_approvers
    from tests.hostile_specs import ALIAS_BOMB

    specs = build(tmp_path / "specs")
    (specs / "approvers.yaml").write_text("users:\n  " + ALIAS_BOMB.replace("\n", "\n  "))
    with pytest.raises(SpecError) as info:
        load_approvers(specs)
    assert "approvers.yaml:" in str(info.value) and "alias" in str(info.value)
