"""Version collisions: two files with one version, in the working tree or across local git branches.

Teams branching in parallel each pick "the next version"; the clash only shows after merging,
when one of them has already run somewhere. Comparing the tree with every unmerged local branch
(``git ls-tree``) finds it before. Without git (or outside a repository) only the tree is checked.
"""

from __future__ import annotations

import os
import subprocess
from collections import defaultdict
from pathlib import Path, PurePosixPath

from polymigrate.catalog import DomainCatalog, parse_name
from polymigrate.lint.model import Finding
from polymigrate.lint.registry import get

_RULE = get("version-collision")


def _key(technology: str, name: str):
    try:
        parsed = parse_name(technology, name)
    except ValueError:
        return None
    if parsed is None or parsed[1] is None:
        return None
    kind, version, _ = parsed
    return kind.value, version


def _finding(path: str, message: str, technology: str) -> Finding:
    return Finding(_RULE.name, _RULE.severity, message, path, None, statement=os.path.basename(path),
                   fix=_RULE.fix, technology=technology)


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _tree_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def find(catalog: DomainCatalog) -> list[Finding]:
    """Collisions for every technology folder of the catalog."""
    findings: list[Finding] = []
    for technology, migrations in catalog.migrations.items():
        if not migrations:
            continue
        m = migrations[0]
        folder = Path(str(m.path)[: -len(m.script)]) if str(m.path).endswith(m.script) else m.path.parent
        findings += _in_folder(technology, folder)
    return findings


def _in_folder(technology: str, folder: Path) -> list[Finding]:
    findings: list[Finding] = []
    by_key: dict = defaultdict(list)
    for p in _tree_files(folder):
        key = _key(technology, p.name)
        if key:
            by_key[key].append(p)
    for (_kind, version), paths in by_key.items():
        for p in paths[1:]:
            findings.append(_finding(str(p), f"version {version} is also used by {paths[0]} in this tree", technology))
    findings += _across_branches(technology, folder, by_key)
    return findings


def _across_branches(technology: str, folder: Path, by_key: dict) -> list[Finding]:
    top = _git(folder, "rev-parse", "--show-toplevel")
    if not top or not by_key:
        return []
    root = Path(top.strip())
    try:
        rel = folder.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return []
    branches = (_git(root, "for-each-ref", "--format=%(refname:short)", "refs/heads") or "").split()
    findings: list[Finding] = []
    for branch in branches:
        # a branch already merged into HEAD cannot collide: its files are in the tree (or were renamed since)
        if _git(root, "merge-base", "--is-ancestor", branch, "HEAD") is not None:
            continue
        listing = _git(root, "ls-tree", "-r", "--name-only", branch, "--", rel)
        for name in (listing or "").splitlines():
            key = _key(technology, PurePosixPath(name).name)
            if key not in by_key:
                continue
            ours = by_key[key][0]
            if PurePosixPath(name).name != ours.name:
                findings.append(_finding(str(ours), f"version {key[1]} is also {name} on branch '{branch}'",
                                         technology))
    return findings
