"""Reading spec and migration files without trusting them.

Everything under ``migration_specs/`` is input from whoever can open a pull request, and the DAG
file parses it inside Airflow's 30-second budget for every DAG of the project. So every file is
read in bounded time and memory, whatever it holds:

* only regular files inside the spec tree: a symbolic link that leaves the tree (to ``/etc``, to
  another checkout, to ``/dev/zero``) is refused, and so is a device, a pipe or a socket;
* at most ``MAX_SPEC_BYTES`` for a YAML spec and ``MAX_MIGRATION_BYTES`` for a migration, read
  with a ceiling rather than trusting the size the file system reports;
* YAML composed by libyaml (when PyYAML has it) and checked before anything walks it as a tree: at
  most ``MAX_DEPTH`` levels of nesting and ``MAX_NODES`` values once every alias is expanded (a
  385-byte "billion laughs" expands to 387 million strings), and no alias inside itself.

Each refusal is a ``Problem`` naming the file (and the line, where YAML has one) and the fix.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from polymigrate.errors import Problem

MAX_SPEC_BYTES = 256 * 1024          # the samples' largest spec is under 3 KB
MAX_MIGRATION_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 100_000

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: about ten times faster, same result


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def read_bytes(path: Path, root: Path | None, limit: int, what: str, domain: str | None = None) -> bytes | Problem:
    """The content of ``path``, or a Problem: outside ``root`` once links are followed, not a regular
    file, or larger than ``limit`` bytes (``what`` names the kind of file in the message)."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (Python < 3.13)
        return Problem(str(path), f"cannot be read: {exc}", domain=domain,
                       hint="fix or remove the symbolic link")
    if root is not None and not inside(resolved, root.resolve()):
        return Problem(str(path), f"is a symbolic link to {resolved}, which leaves the spec tree {root}",
                       domain=domain, hint="copy the file into the spec tree, or link to a file inside it")
    try:
        st = os.stat(resolved)
        if not stat.S_ISREG(st.st_mode):
            return Problem(str(path), "is not a regular file (a device, a pipe or a socket)", domain=domain,
                           hint="replace it with an ordinary file")
        if st.st_size > limit:
            return Problem(str(path), f"is {_size(st.st_size)}; {what} are limited to {_size(limit)}",
                           domain=domain, hint="split it, or move bulk data out of the spec tree")
        with resolved.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        return Problem(str(path), f"cannot be read: {exc.strerror or exc}", domain=domain)
    if len(data) > limit:
        return Problem(str(path), f"is larger than {_size(limit)}, the limit for {what}", domain=domain,
                       hint="split it, or move bulk data out of the spec tree")
    return data


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _shape_problem(root: yaml.Node, file: str) -> Problem | None:
    """Depth and expanded size of a composed YAML graph, in one pass that never expands it.

    Aliases make the graph share nodes: each node's expanded size and height are computed once
    (memoised by identity), so a bomb costs as much to check as it costs to write down.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        line = node.start_mark.line + 1
        if leaving:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            if height[key] > MAX_DEPTH:
                return Problem(file, f"nested more than {MAX_DEPTH} levels deep", line=line,
                               hint="flatten the structure; no spec key needs that depth")
            if size[key] > MAX_NODES:
                return Problem(file, f"expands to more than {MAX_NODES:,} values through YAML aliases "
                                     "(an alias bomb?)", line=line,
                               hint="write the values out, or reference fewer anchors")
            continue
        if key in size:
            continue
        if key in on_path:
            return Problem(file, "a YAML alias refers to a node that contains it (recursive alias)", line=line,
                           hint="remove the alias or its anchor")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((k, False) for k in _children(node))
    return None


def load_yaml(text: str, file: str) -> tuple[Any, yaml.Node | None, list[Problem]]:
    """(data, node for line numbers, problems) of one YAML document, bounded as the module says."""
    loader = _LOADER(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:  # the pure-Python composer, on nesting libyaml would have refused
            return None, None, [Problem(file, f"nested more than {MAX_DEPTH} levels deep",
                                        hint="flatten the structure; no spec key needs that depth")]
        if node is None:
            return None, None, []
        problem = _shape_problem(node, file)
        if problem is not None:
            return None, None, [problem]
        return loader.construct_document(node), node, []
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        detail = str(getattr(exc, "problem", None) or exc)
        if "nesting depth" in detail:
            return None, None, [Problem(file, f"nested more than {MAX_DEPTH} levels deep", line=line,
                                        hint="flatten the structure; no spec key needs that depth")]
        return None, None, [Problem(file, f"malformed YAML: {detail}", line=line,
                                    hint="check indentation and quoting near that line")]
    finally:
        loader.dispose()


def read_yaml(path: Path, root: Path | None, domain: str | None = None) -> tuple[Any, yaml.Node | None, list[Problem]]:
    """A spec file read, decoded and loaded under every limit; problems instead of exceptions."""
    raw = read_bytes(path, root, MAX_SPEC_BYTES, "spec files", domain)
    if isinstance(raw, Problem):
        return None, None, [raw]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, None, [Problem(str(path), f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                                    line=raw.count(b"\n", 0, exc.start) + 1, hint="save the file as UTF-8",
                                    domain=domain)]
    data, node, problems = load_yaml(text, str(path))
    return data, node, [Problem(p.file, p.message, p.line, p.hint, domain) if domain and not p.domain else p
                        for p in problems]
