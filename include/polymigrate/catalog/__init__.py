"""Discover migration files per domain and technology, checksum them, render placeholders.

Naming (DESIGN.md):

=============  ===========================================  ==============================
technology     versioned                                    other
=============  ===========================================  ==============================
postgresql     ``V{version}__{description}.sql``            ``R__{description}.sql`` (repeatable),
                                                            ``U{version}__{description}.sql`` (undo)
mongodb        ``{version}-{description}.json|.py|.js``
redis          ``{version}-{description}.lua``
elasticsearch  ``{version}-{description}.json``
=============  ===========================================  ==============================

The parts: ``naming`` (file names, versions), ``header`` (directives, a JSON file's phase, a
backfill's checks), ``phases`` (release phases); this module reads the files into ``Migration``s.

Files may sit in sub-folders; order comes from versions only. A header comment
``-- polymigrate: transactional=false, lock_timeout=5s`` (``#`` or ``//`` work too) sets options.
Files are read through ``spec.reading``: a symbolic link that leaves the spec tree, a device or a
pipe is refused, never read, and a file is read up to ``MAX_MIGRATION_BYTES``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from polymigrate.adapters import TECHNOLOGIES
from polymigrate.catalog.header import (_PLACEHOLDER, Directives, _check_backfill, json_phase,
                                        parse_directives)
from polymigrate.catalog.naming import EXTENSIONS, Kind, next_version, parse_name
from polymigrate.catalog.phases import (PHASES, in_phase, phase_counts, phase_order_problems, phases_line,
                                        undeclared_phase_problems)
from polymigrate.checksums import flyway_checksum, sha256
from polymigrate.errors import Problem, SpecError
from polymigrate.spec import formats
from polymigrate.spec.reading import MAX_MIGRATION_BYTES, inside, read_bytes
from polymigrate.versions import Version

__all__ = ["DECLARED_STATE_TECHNOLOGIES", "EXTENSIONS", "PHASES", "Directives", "DomainCatalog", "Kind", "Migration",
           "applicable", "discover", "discover_domain", "in_phase", "json_phase", "load_file",
           "next_version", "parse_directives", "parse_name", "phase_counts", "phase_order_problems", "phases_line",
           "undeclared_phase_problems"]


@dataclass(frozen=True)
class Migration:
    domain: str
    technology: str
    kind: Kind
    version: Version | None
    description: str
    script: str  # path relative to the technology folder, with '/' separators
    path: Path
    checksum: int  # Flyway's CRC32 (for every technology, so one ledger column serves all)
    sha256: str
    text: str = field(repr=False, compare=False)
    directives: Directives = Directives()

    @property
    def phase(self) -> str:
        """The release phase (docs/phases.md): declared in the header or JSON, else ``expand``."""
        return self.directives.phase or "expand"

    @property
    def declares_phase(self) -> bool:
        return self.directives.phase is not None

    @property
    def id(self) -> str:
        """Version for versioned/undo migrations, the description for repeatables."""
        return str(self.version) if self.version is not None else f"R:{self.description}"

    @property
    def ledger_type(self) -> str:
        """The ``type`` column value; ``SQL`` matches Flyway's so its history validates."""
        tech = TECHNOLOGIES[self.technology]
        kind = tech.ledger_type + ("_" + self.path.suffix[1:].upper() if len(tech.extensions) > 1 else "")
        return "UNDO_" + kind if self.kind is Kind.UNDO else kind

    def render(self, placeholders: dict[str, str]) -> str:
        """The text with ``${name}`` replaced; an unknown placeholder is a SpecError naming the line.

        MongoDB ``.js`` files are migrate-mongo's, run unchanged: ``${…}`` there is a JavaScript
        template literal, never a placeholder.
        """
        if self.technology == "mongodb" and self.path.suffix.lower() == ".js":
            return self.text
        problems: list[Problem] = []

        def sub(m: re.Match) -> str:
            name = m.group("name")
            if name in placeholders:
                return str(placeholders[name])
            line = self.text.count("\n", 0, m.start()) + 1
            problems.append(Problem(str(self.path), f"placeholder ${{{name}}} has no value", line=line,
                                    hint="define it under 'placeholders:' in the environment or region spec",
                                    domain=self.domain))
            return m.group(0)

        out = _PLACEHOLDER.sub(sub, self.text)
        if problems:
            raise SpecError(problems)
        return out


@dataclass
class DomainCatalog:
    domain: str
    migrations: dict[str, list[Migration]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)

    def versioned(self, technology: str) -> list[Migration]:
        return [m for m in self.migrations.get(technology, []) if m.kind is Kind.VERSIONED]

    def undo(self, technology: str) -> list[Migration]:
        return [m for m in self.migrations.get(technology, []) if m.kind is Kind.UNDO]

    def applicable(self, technology: str) -> list[Migration]:
        """Versioned (by version) then repeatable (by description): the order they apply in."""
        return applicable(self.migrations.get(technology, []))

    @property
    def phased(self) -> bool:
        """Some file declares a release phase: the domain runs phase-major (docs/phases.md)."""
        return any(m.declares_phase for ms in self.migrations.values() for m in ms)

    def phases(self, technology: str) -> list[str]:
        """The phases the technology's files are in, in release order."""
        present = {m.phase for m in self.applicable(technology)}
        return [p for p in PHASES if p in present]


def applicable(migrations: list[Migration]) -> list[Migration]:
    """What a forward run considers: every migration but the undo files (which only ``undo`` runs)."""
    return [m for m in migrations if m.kind is not Kind.UNDO]


def load_file(domain: str, technology: str, root: Path, path: Path,
              tree: Path | None = None) -> tuple[Migration | None, list[Problem], list[Problem]]:
    """One file → (migration or None, problems, notes); ``tree`` is the folder links may not leave
    (default: ``root``, the technology folder)."""
    rel = path.relative_to(root).as_posix()
    try:
        parsed = parse_name(technology, path.name)
    except ValueError as exc:
        return None, [Problem(str(path), f"cannot parse migration name: {exc}", domain=domain,
                              hint="rename the file")], []
    if parsed is None:
        return None, [], [Problem(str(path), f"not a {technology} migration (extension); ignored", domain=domain)]
    kind, version, desc = parsed
    # Flyway's ledger column widths: a longer value would be cut when recorded and never match again
    for what, value, width in (("version", str(version or ""), 50), ("description", desc, 200), ("path", rel, 1000)):
        if len(value) > width:
            return None, [Problem(str(path), f"{what} is {len(value)} characters; the ledger keeps {width}",
                                  domain=domain, hint=f"shorten the file name's {what}")], []
    raw = read_bytes(path, tree or root, MAX_MIGRATION_BYTES, "migration files", domain)
    if isinstance(raw, Problem):
        return None, [raw], []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(str(path), f"not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
                              line=raw.count(b"\n", 0, exc.start) + 1, domain=domain,
                              hint="save the file as UTF-8")], []
    body = text.lstrip("\ufeff")
    if not body.strip():
        return None, [Problem(str(path), "empty migration file", domain=domain,
                              hint="add the change, or delete the file if it was created by mistake")], []
    directives, problems = parse_directives(body, str(path), domain)
    problems += _check_backfill(technology, kind, directives, body, path, domain)
    if path.suffix.lower() == ".json":
        bad = formats.check(technology, body)
        if bad is not None:
            problems.append(Problem(str(path), f"not a valid {technology} migration: {bad}", line=bad.line, domain=domain,
                                    hint="see migration_specs/README.md for the format"))
        else:
            phase = json_phase(body)
            if phase:
                directives = replace(directives, phase=phase)
    mig = Migration(domain=domain, technology=technology, kind=kind, version=version, description=desc,
                    script=rel, path=path, checksum=flyway_checksum(text), sha256=sha256(raw),
                    text=body, directives=directives)
    return mig, problems, []


DECLARED_STATE_TECHNOLOGIES = ("mongodb", "elasticsearch", "postgresql")  # postgresql/schema/*.sql: plain DDL


def discover(domain: str, technology: str, folder: Path, tree: Path | None = None) -> DomainCatalog:
    """Every migration of one technology folder (recursively), sorted, with problems collected.

    ``tree`` is the folder symbolic links may point into (the spec root; default ``folder``).
    Linked sub-folders are not followed (a link back up would loop): a note says so, or a problem
    when the link leaves the tree.
    """
    cat = DomainCatalog(domain)
    found: list[Migration] = []
    tree = tree or folder
    if folder.is_dir():
        for dirpath, dirnames, filenames in os.walk(folder):
            # __pycache__ appears next to MongoDB .py migrations once they have been imported
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
            if dirpath == str(folder) and technology in DECLARED_STATE_TECHNOLOGIES:
                # schema/ holds the declared state `polymigrate diff` reads (docs/diff.md), not migrations
                dirnames[:] = [d for d in dirnames if d != "schema"]
            for d in [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
                link = Path(dirpath) / d
                if inside(link.resolve(), tree.resolve()):
                    cat.notes.append(Problem(str(link), "linked folder not followed; its files are ignored",
                                             domain=domain, hint="move the files into the folder"))
                else:
                    cat.problems.append(Problem(str(link), f"is a symbolic link to {link.resolve()}, which leaves "
                                                f"the spec tree {tree}", domain=domain,
                                                hint="copy the files into the spec tree"))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                mig, problems, notes = load_file(domain, technology, folder, Path(dirpath) / name, tree)
                cat.problems += problems
                cat.notes += notes
                if mig is not None:
                    found.append(mig)
    seen: dict[tuple, Migration] = {}
    for m in found:
        key = (m.kind, m.version if m.version is not None else m.description.lower())
        if key in seen:
            other = seen[key]
            what = f"version {m.version}" if m.version is not None else f"repeatable '{m.description}'"
            cat.problems.append(Problem(str(m.path), f"duplicate {what} (also {other.path})", domain=domain,
                                        hint="renumber one of them (`polymigrate new` picks the next free version)"))
        else:
            seen[key] = m
    unique = list(seen.values())
    versioned = sorted((m for m in unique if m.kind is Kind.VERSIONED), key=lambda m: m.version)
    repeatable = sorted((m for m in unique if m.kind is Kind.REPEATABLE), key=lambda m: m.description.lower())
    undo = sorted((m for m in unique if m.kind is Kind.UNDO), key=lambda m: m.version)
    versions = {m.version for m in versioned}
    for u in undo:
        if u.version not in versions:
            cat.problems.append(Problem(str(u.path), f"undo for version {u.version}, which has no V file",
                                        domain=domain, hint="rename it to match a versioned migration"))
    cat.problems += phase_order_problems(versioned, domain)
    cat.migrations[technology] = versioned + repeatable + undo
    return cat


def discover_domain(domain) -> DomainCatalog:
    """Every technology of a ``spec.Domain``."""
    cat = DomainCatalog(domain.name)
    tree = Path(domain.path).parent  # the spec root: links may point anywhere inside it
    for tech in domain.technology_order():
        part = discover(domain.name, tech, domain.technology_dir(tech), tree)
        cat.migrations[tech] = part.migrations.get(tech, [])
        cat.problems += part.problems
        cat.notes += part.notes
    cat.problems += undeclared_phase_problems(cat, domain)
    return cat
