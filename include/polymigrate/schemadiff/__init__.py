"""Generate migrations from a desired state (issue 26).

One module per technology (``postgresql``, ``mongodb``, ``elasticsearch``), each exporting

    def generate(current: str, desired: str | Path, *, naming: NamingContext) -> Generated

``current`` is a target URL (or, for PostgreSQL, a domain folder applied to a scratch database);
``desired`` a declarative folder or another target URL. The command layer (``commands/diff.py``)
picks the module from the current URL's scheme, lints every generated file, and writes them in the
domain's folder or prints them. Driver imports stay inside functions: the core imports this
package without any database driver installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class GeneratedFile:
    """One file the diff wants written: its name in the domain's naming scheme and its text."""

    name: str
    text: str
    kind: str = "versioned"  # "versioned" | "undo"
    notes: tuple[str, ...] = ()  # hazards and choices, said to the user when the file is written


@dataclass
class Generated:
    files: list[GeneratedFile] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)  # what could not be generated, and why

    @property
    def empty(self) -> bool:
        return not self.files


@dataclass(frozen=True)
class NamingContext:
    """Where generated files go and how they are named: the next version after the folder's newest."""

    folder: Path | None
    next_version: str
    description: str
