"""What the DAG's description shows of a domain's migration files at parse time: their names (how
many, the newest version). No file is opened, no database touched (``polymigrate.blueprint``'s
parse-time budget): the phases the DAG's shape needs are declared in domain.yaml (issue 24).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from polymigrate.catalog import parse_name
from polymigrate.spec.models import Domain
from polymigrate.spec.reading import inside


def _names(top: Path) -> Iterator[str]:
    """The name of every file under ``top`` but in hidden folders and ``__pycache__``, as validate
    discovers them (links to folders are not followed; a link that leaves the tree is counted here
    and refused by validate). Names only: nothing is opened, not even resolved.

    Issue 24: a ``Path`` (and a ``Path.resolve``) per file was 40 % of compiling 50 domains × 500
    files; ``DirEntry.is_dir`` and ``is_symlink`` cost no system call where the kernel gives the type.
    """
    pending = [str(top)]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir():
                    if not entry.is_symlink() and not entry.name.startswith(".") and entry.name != "__pycache__":
                        pending.append(entry.path)
                    continue
            except OSError:
                pass
            yield entry.name


def file_counts(domain: Domain, root: Path | None = None) -> dict[str, tuple[int, str | None]]:
    """Per technology, how many forward migration files it has and the newest version, from their
    names (the DAG's description). Files that do not parse are skipped here: validate reports them.
    """
    out: dict[str, tuple[int, str | None]] = {}
    tree = (root or Path(domain.path).parent).resolve()
    for tech in domain.technology_order():
        count, newest = 0, None
        top = domain.technology_dir(tech)
        try:
            names = _names(top) if inside(top.resolve(strict=True), tree) else iter(())
        except (OSError, RuntimeError):
            names = iter(())  # no folder, or a link out of the tree: validate says which
        for name in names:
            try:
                parsed = parse_name(tech, name)
            except ValueError:
                continue  # validate reports it with the fix
            if not parsed or parsed[0].value == "undo":
                continue
            count += 1
            if parsed[1] is not None and (newest is None or parsed[1] > newest):
                newest = parsed[1]
        out[tech] = (count, str(newest) if newest is not None else None)
    return out
