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

Files may sit in sub-folders; order comes from versions only. A header comment
``-- polymigrate: transactional=false, lock_timeout=5s`` (``#`` or ``//`` work too) sets options.
Files are read through ``spec.reading``: a symbolic link that leaves the spec tree, a device or a
pipe is refused, never read, and a file is read up to ``MAX_MIGRATION_BYTES``.
"""

from __future__ import annotations

import enum
import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from polymigrate.adapters import TECHNOLOGIES
from polymigrate.checksums import flyway_checksum, sha256
from polymigrate.errors import PolymigrateError, Problem, SpecError
from polymigrate.spec import formats
from polymigrate.spec.reading import MAX_MIGRATION_BYTES, inside, read_bytes
from polymigrate.versions import Version

EXTENSIONS = {key: t.extensions for key, t in TECHNOLOGIES.items()}
_PG_NAME = re.compile(r"^(?P<prefix>[VUR])(?P<version>[^_]*(?:_[^_]+)*?)__(?P<desc>.+)\.sql$")
_DASH_EXTENSIONS = sorted({e[1:] for t in TECHNOLOGIES.values() if t.naming == "dash" for e in t.extensions})
_DASH_NAME = re.compile(rf"^(?P<version>\d+(?:[._]\d+)*)-(?P<desc>.+)\.(?P<ext>{'|'.join(map(re.escape, _DASH_EXTENSIONS))})$")
_DIRECTIVE = re.compile(r"^\s*(?:--|#|//)\s*polymigrate:\s+(?P<body>.*)$")
_COMMENT = re.compile(r"^\s*(?:--|#|//)")
_PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Za-z_][\w.:-]*)\}")
_DURATION = re.compile(r"^\d+(\.\d+)?\s*(ms|s|min|h)?$")


class Kind(str, enum.Enum):
    VERSIONED = "versioned"
    REPEATABLE = "repeatable"
    UNDO = "undo"


@dataclass(frozen=True)
class Directives:
    """Per-file options from the header comment."""

    transactional: bool | None = None  # None: let the adapter decide (e.g. by parsing the SQL)
    lock_timeout: str | None = None
    statement_timeout: str | None = None
    batch_size: int | None = None
    pause_ms: int | None = None
    # zero-downtime releases (docs/phases.md): the release phase this file belongs to
    phase: str | None = None
    # a PostgreSQL backfill (docs/postgresql.md#backfills): the file's one UPDATE runs in keyset batches
    backfill: bool | None = None
    key: str | None = None
    batch_time: str | None = None
    max_batch: int | None = None
    max_lag: str | None = None

    KEYS = ("transactional", "lock_timeout", "statement_timeout", "batch_size", "pause_ms", "phase",
            "backfill", "key", "batch_time", "max_batch", "max_lag")


PHASES = ("expand", "migrate", "contract")
_IDENT = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_$]*|"[^"]+")$')


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
        if self.technology == "postgresql":
            return "UNDO_SQL" if self.kind is Kind.UNDO else "SQL"
        return {"mongodb": "MONGO", "redis": "LUA", "elasticsearch": "ES"}[self.technology] + \
            ("_" + self.path.suffix[1:].upper() if self.technology == "mongodb" else "")

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


def phase_counts(catalog: "DomainCatalog", technologies: list[str]) -> dict[str, dict[str, int]]:
    """``{phase: {technology: files}}`` in release order, or ``{}`` when no file declares a phase."""
    if not catalog.phased:
        return {}
    out: dict[str, dict[str, int]] = {}
    for ph in PHASES:
        for tech in technologies:
            n = sum(1 for m in catalog.applicable(tech) if m.phase == ph)
            if n:
                out.setdefault(ph, {})[tech] = n
    return out


def phases_line(phases: dict[str, dict[str, int]], soak_minutes: float = 0, contract_approval: bool = False) -> str:
    """``expand (postgresql 1, redis 1) → migrate (…) → contract (…)``, for logs and the approval summary."""
    text = " → ".join(f"{ph} ({', '.join(f'{t} {n}' for t, n in techs.items())})" for ph, techs in phases.items())
    if "contract" in phases:
        text += "; contract runs only after the earlier phases verified in the region" + \
            (f", then {soak_minutes:g} min of soak" if soak_minutes else "") + \
            (", and a separate approval of the contract phase there" if contract_approval else "")
    return text


def in_phase(migration: Migration | None, phase: str | None) -> bool:
    """Whether a run of ``phase`` applies ``migration``: its phase or an earlier one (an earlier phase's
    file still pending, e.g. a resumed backfill, runs first); every file when ``phase`` is None."""
    if phase is None or migration is None:
        return True
    return PHASES.index(migration.phase) <= PHASES.index(phase)


def applicable(migrations: list[Migration]) -> list[Migration]:
    """What a forward run considers: every migration but the undo files (which only ``undo`` runs)."""
    return [m for m in migrations if m.kind is not Kind.UNDO]


def parse_name(technology: str, filename: str) -> tuple[Kind, Version | None, str] | None:
    """(kind, version, description) for a migration file name, or None if it is not one.

    Raises ValueError with a fix hint when the extension matches but the name does not.
    """
    ext = os.path.splitext(filename)[1].lower()
    if ext not in EXTENSIONS[technology]:
        return None
    if TECHNOLOGIES[technology].naming == "flyway":
        m = _PG_NAME.match(filename)
        if not m:
            raise ValueError("expected V<version>__<description>.sql, R__<description>.sql or U<version>__<description>.sql")
        prefix, version, desc = m.group("prefix"), m.group("version"), m.group("desc")
        if prefix == "R":
            if version:
                raise ValueError("a repeatable migration has no version: R__<description>.sql")
            return Kind.REPEATABLE, None, desc.replace("_", " ")
        if not version:
            raise ValueError(f"missing version after '{prefix}': {prefix}<version>__<description>.sql")
        return (Kind.UNDO if prefix == "U" else Kind.VERSIONED), Version(version), desc.replace("_", " ")
    m = _DASH_NAME.match(filename)
    if not m:
        raise ValueError(f"expected <version>-<description>{ext} (e.g. 1.2-add-index{ext})")
    return Kind.VERSIONED, Version(m.group("version")), m.group("desc").replace("_", " ").replace("-", " ")


def parse_directives(text: str, file: str, domain: str | None = None) -> tuple[Directives, list[Problem]]:
    values: dict = {}
    problems: list[Problem] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not _COMMENT.match(line):
            break  # directives live in the header only
        m = _DIRECTIVE.match(line)
        if not m:
            continue
        for item in filter(None, re.split(r"[,\s]+", m.group("body").strip())):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if key not in Directives.KEYS or not sep:
                problems.append(Problem(file, f"unknown directive '{item}'", line=lineno, domain=domain,
                                        hint=f"use key=value with one of {', '.join(Directives.KEYS)}"))
                continue
            if key in ("transactional", "backfill"):
                if value.lower() not in ("true", "false"):
                    problems.append(Problem(file, f"{key}={value}", line=lineno, domain=domain, hint="use true or false"))
                    continue
                values[key] = value.lower() == "true"
            elif key == "phase":
                if value.lower() not in PHASES:
                    problems.append(Problem(file, f"unknown phase '{value}'", line=lineno, domain=domain,
                                            hint=f"use one of {', '.join(PHASES)} (docs/phases.md)"))
                    continue
                values[key] = value.lower()
            elif key == "key":
                if not _IDENT.match(value):
                    problems.append(Problem(file, f"key={value} is not a column name", line=lineno, domain=domain,
                                            hint="name one column of the table, e.g. key=id"))
                    continue
                values[key] = value[1:-1] if value.startswith('"') else value.lower()
            elif key in ("batch_size", "pause_ms", "max_batch"):
                if not value.isdigit():
                    problems.append(Problem(file, f"{key}={value} is not a whole number", line=lineno, domain=domain))
                    continue
                values[key] = int(value)
            else:
                if not _DURATION.match(value):
                    problems.append(Problem(file, f"{key}={value} is not a duration", line=lineno, domain=domain,
                                            hint="e.g. 500ms, 5s, 10min, 1h"))
                    continue
                values[key] = value
    return Directives(**values), problems


_BACKFILL_ONLY = ("key", "batch_time", "max_batch", "max_lag")


def _check_backfill(technology: str, kind: Kind, d: Directives, body: str, path: Path, domain: str) -> list[Problem]:
    """What validate can say about a backfill file without a server (the table is checked when it runs)."""
    file = str(path)
    stray = [k for k in _BACKFILL_ONLY if getattr(d, k) is not None]
    if not d.backfill:
        return [Problem(file, f"{', '.join(stray)} only apply to a backfill", line=1, domain=domain,
                        hint="add backfill=true to the header, or remove them")] if stray else []
    if technology != "postgresql":
        return [Problem(file, f"backfill=true is for PostgreSQL files; {technology} has its own way", line=1,
                        domain=domain, hint="MongoDB: ctx.transform in a .py migration (docs/mongodb.md); "
                                            "Elasticsearch: a reindex step")]
    if kind is not Kind.VERSIONED:
        return [Problem(file, f"a {kind.value} file cannot be a backfill", line=1, domain=domain,
                        hint="make it a versioned V<version>__<description>.sql file")]
    if d.transactional:
        return [Problem(file, "a backfill runs in many short transactions; transactional=true contradicts it",
                        line=1, domain=domain, hint="remove transactional=true")]
    if _PLACEHOLDER.search(body):
        return []  # parsed when it runs, with the values filled in
    from polymigrate.adapters.postgresql.backfill import parse  # pglast: only for the files that need it
    try:
        parse(body, path)
    except PolymigrateError as exc:
        return [Problem(file, exc.args[0], line=getattr(exc, "line", None), domain=domain,
                        hint=getattr(exc, "hint", None))]
    return []


_JSON_PHASE = re.compile(r'"phase"\s*:\s*"(?P<phase>[A-Za-z]+)"')


def json_phase(text: str) -> str | None:
    """The top-level ``"phase"`` of a JSON migration (validated by its format model). A head cut at
    4 KB (the blueprint's read) does not parse: then the first ``"phase": "…"`` in it."""
    try:
        data = json.loads(_PLACEHOLDER.sub("0", text))
    except ValueError:
        m = _JSON_PHASE.search(text)
        return m.group("phase").lower() if m else None
    phase = data.get("phase") if isinstance(data, dict) else None
    return phase.lower() if isinstance(phase, str) else None


def header_phase(technology: str, head: str) -> str | None:
    """The phase a file declares, from its first few KB (for the DAG's shape at parse time: no full read)."""
    if "phase" not in head and "\\u" not in head:
        return None  # most files declare none: every way to declare one spells the word (a JSON key may escape it)
    if head.lstrip("\ufeff").lstrip().startswith("{"):
        phase = json_phase(head)
    else:
        phase = parse_directives(head.lstrip("\ufeff"), "")[0].phase
    return phase if phase in PHASES else None


def phase_order_problems(migrations: list[Migration], domain: str) -> list[Problem]:
    """Within one technology, versions must not go back to an earlier phase: a phase-major run applies
    every expand file before any migrate file, so V3 (expand) after V2 (migrate) would run out of order."""
    out: list[Problem] = []
    versioned = [m for m in migrations if m.kind is Kind.VERSIONED]
    if not any(m.declares_phase for m in migrations):
        return out
    highest: Migration | None = None
    for m in versioned:
        if highest is not None and PHASES.index(m.phase) < PHASES.index(highest.phase):
            out.append(Problem(str(m.path), f"version {m.version} is in phase {m.phase} but comes after version "
                               f"{highest.version} ({highest.script}) in phase {highest.phase}", domain=domain,
                               hint=f"give it a version below {highest.version}, or declare phase={highest.phase} "
                                    "(docs/phases.md: within a technology, phases follow version order)"))
        elif highest is None or PHASES.index(m.phase) > PHASES.index(highest.phase):
            highest = m
    return out


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
    return cat


_TIMESTAMP_DIGITS = 12  # yyyymmddHHMM; a single version part this long is taken as a timestamp


def next_version(migrations: list[Migration], now: datetime | None = None) -> str:
    """The next free version, keeping the style: the next major (``1.10`` → ``2``), or, when the
    versions are timestamps (``202401151200``), the current UTC time in the same number of digits."""
    versions = [m.version for m in migrations if m.version is not None]
    if not versions:
        return "1"
    top = max(versions)
    digits = len(str(top.parts[0]))
    if len(top.parts) == 1 and digits >= _TIMESTAMP_DIGITS:
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S%f")[:digits]
        return str(max(int(stamp.ljust(digits, "0")), top.parts[0] + 1))
    return str(top.parts[0] + 1)
