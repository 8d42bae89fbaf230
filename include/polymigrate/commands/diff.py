"""``polymigrate diff`` and ``undo-gen``: generated migrations, linted, then written or shown (issue 26).

The technology comes from the current URL's scheme (a folder: PostgreSQL, a domain's migrations
applied to a scratch database); its ``polymigrate.schemadiff.<technology>`` module makes the files,
imported only when asked for, so a technology whose generator is not there yet says so instead of
failing the others. Every generated file goes through the project's lint; its findings come back with
their rule names, so nothing generated reaches an approver unseen.
"""

from __future__ import annotations

import importlib
import re
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from polymigrate.catalog import Kind, discover, load_file, next_version
from polymigrate.connections import redact, technology_of
from polymigrate.errors import PermanentError, PolymigrateError, Problem, SpecError
from polymigrate.lint.model import Finding
from polymigrate.schemadiff import Generated, GeneratedFile, NamingContext


def _error(message: str, *, hint: str | None = None) -> SpecError:
    """Bad input, as every other verb reports it: where (the text before the first ': '), what, the fix."""
    where, sep, what = message.partition(": ")
    return SpecError([Problem(where, what, hint=hint) if sep else Problem("polymigrate diff", message, hint=hint)])


class NotSupported(PermanentError):
    """The technology has no generator (yet)."""


@dataclass
class Outcome:
    generated: Generated
    findings: dict[str, list[Finding]] = field(default_factory=dict)  # file name → lint findings
    written: list[Path] = field(default_factory=list)
    technology: str = "postgresql"
    notes: list[str] = field(default_factory=list)


def technology_for(current: str | Path) -> str:
    if isinstance(current, str) and "://" in current:
        tech = technology_of(current)
        if tech is None:
            raise _error(f"--current {redact(current)}: unknown URL scheme",
                            hint="use postgresql://, mongodb://, http(s):// (Elasticsearch/OpenSearch) or a folder")
        return tech
    return "postgresql"  # a folder is a domain's SQL migrations, applied to a scratch database


def generator(technology: str) -> Any:
    try:
        return importlib.import_module(f"polymigrate.schemadiff.{technology}")
    except ModuleNotFoundError as exc:
        if exc.name != f"polymigrate.schemadiff.{technology}":
            raise  # a driver missing inside it is a different problem: say that one
        raise NotSupported(f"polymigrate diff: {technology} is not supported yet",
                           hint="PostgreSQL is; MongoDB and Elasticsearch generators are being written (issue 26)") from None


def naming_for(folder: Path | None, technology: str, description: str, domain: str = "diff") -> NamingContext:
    """The next version after the folder's newest, in its style (timestamps stay timestamps)."""
    migrations = discover(domain, technology, folder).migrations.get(technology, []) if folder and folder.is_dir() else []
    return NamingContext(folder=folder, next_version=next_version(migrations), description=description)


def lint_generated(files: list[GeneratedFile], technology: str, domain: str = "diff") -> dict[str, list[Finding]]:
    """The project's lint on each file, as it will be read from the domain's folder."""
    from polymigrate.lint import lint_file

    out: dict[str, list[Finding]] = {}
    with tempfile.TemporaryDirectory(prefix="pm_diff_lint_") as tmp:
        root = Path(tmp)
        for f in files:
            path = root / f.name
            path.write_text(f.text, encoding="utf-8")
            mig, problems, _ = load_file(domain, technology, root, path)
            if mig is None:
                raise _error(f"generated {f.name} is not a valid migration: {problems[0] if problems else '?'}",
                                hint="this is a bug of polymigrate diff: please report it with the two states")
            # named as the file will be, not by the temporary folder it was linted in
            out[f.name] = [replace(x, file=f.name) for x in lint_file(mig).findings]
    return out


def write(files: list[GeneratedFile], folder: Path) -> list[Path]:
    """Every file, or none: an existing name is never overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    taken = [f.name for f in files if (folder / f.name).exists()]
    if taken:
        raise _error(f"{folder}: {', '.join(taken)} already exist(s)", hint="nothing was written; move them away "
                        "or pass another --write folder")
    paths = []
    for f in files:
        path = folder / f.name
        path.write_text(f.text, encoding="utf-8")
        paths.append(path)
    return paths


def diff(current: str | Path, desired: str | Path, *, write_to: Path | None = None, description: str = "generated",
         scratch: str | None = None, schema: str | None = None, undo: bool = True,
         placeholders: dict[str, str] | None = None) -> Outcome:
    """Generate, lint and (with ``write_to``) write the files that bring ``current`` to ``desired``."""
    technology = technology_for(current)
    module = generator(technology)
    folder = write_to or (Path(current) if not isinstance(current, str) or "://" not in current else None)
    naming = naming_for(folder, technology, description)
    kwargs: dict[str, Any] = {}
    if technology == "postgresql":
        kwargs = {"scratch_url": scratch, "schema": schema, "undo": undo, "placeholders": placeholders}
    generated: Generated = module.generate(current, desired, naming=naming, **kwargs)
    outcome = Outcome(generated, technology=technology)
    outcome.findings = lint_generated(generated.files, technology)
    if write_to is not None and generated.files:
        outcome.written = write(generated.files, write_to)
    return outcome


def undo_gen(v_file: Path, *, scratch: str | None = None, schema: str | None = None,
             write_it: bool = True, placeholders: dict[str, str] | None = None) -> Outcome:
    """The U file of one PostgreSQL V file: its folder's earlier versions applied to a scratch
    database, the file applied on a copy, diffed back. Refused, naming the statement, where the way
    back loses data."""
    from polymigrate.schemadiff import postgresql as pg

    v_file = Path(v_file)
    folder = v_file.parent
    if not v_file.is_file():
        raise _error(f"{v_file}: no such file", hint="give the path of a V…__….sql file")
    mig, problems, _ = load_file("diff", "postgresql", folder, v_file)
    if mig is None or mig.kind is not Kind.VERSIONED:
        raise _error(f"{v_file}: not a versioned PostgreSQL migration", hint="name it V{version}__{description}.sql")
    everything = discover("diff", "postgresql", folder).migrations.get("postgresql", [])
    before = [m for m in everything if m.kind is Kind.VERSIONED and m.version < mig.version]
    out = Outcome(Generated())
    with pg.Scratch(pg.scratch_server(folder, scratch)) as s:
        base = s.create()
        if before:
            pg.apply_migrations(base, folder, schema=schema, upto=len(before), placeholders=placeholders)
        u, refused = pg.undo_file(v_file.name, mig.text, base, s)
    out.generated.refusals.extend(refused)
    if u is not None:
        out.generated.files.append(u)
        out.findings = lint_generated([u], "postgresql")
        if write_it:
            out.written = write([u], folder)
    return out


def from_drift(specs: Path, environment: str, region: str, domain: str, *, write_to: Path | None = None,
               scratch: str | None = None, audit_url: str | None = None) -> Outcome:
    """What the latest drift report found on ENV/REGION's PostgreSQL target, as the domain's next
    versioned file: the target's applied migrations on a scratch database → the live target."""
    from polymigrate.adapters import adapter_class
    from polymigrate.commands.context import audit_sink
    from polymigrate.commands.drift import store_of
    from polymigrate.connections import AUDIT_CONN_ID, url_for
    from polymigrate.snapshot_diff import Difference
    from polymigrate.ledger import Status
    from polymigrate.schemadiff import postgresql as pg
    from polymigrate.spec import load_project

    project = load_project(specs)
    if domain not in project.domains:
        raise _error(f"unknown domain {domain!r}", hint=f"one of {sorted(project.domains)}")
    dom = project.domains[domain]
    env = project.environments.get(environment)
    if env is None:
        raise _error(f"unknown environment {environment!r}", hint=f"one of {sorted(project.environments)}")
    if "postgresql" not in dom.technologies:
        raise NotSupported(f"{domain} has no PostgreSQL migrations", hint="--from-drift captures PostgreSQL drift")
    if region not in env.regions:
        raise _error(f"unknown region {region!r} of {environment}", hint=f"one of {sorted(env.regions)}")
    conn_id = env.connection_id(region, "postgresql")
    target = url_for(conn_id)
    if not target:
        raise _error(f"{environment}/{region}: connection '{conn_id}' is not configured",
                        hint=f"set AIRFLOW_CONN_{conn_id.upper()} to the target's URL")
    sink = audit_sink(None, audit_url or url_for(AUDIT_CONN_ID))
    store = store_of(sink)
    if store is None:
        raise _error("--from-drift reads the drift report from the audit store, and none is configured",
                        hint="set AIRFLOW_CONN_POLYMIGRATE_AUDIT (docs/audit.md)")
    try:
        found = store.query(domain=domain, environment=environment, kind="drift", limit=1, newest_first=True)
    finally:
        close = getattr(sink, "close", None)
        if callable(close):
            close()
    report = found[-1].event if found else None
    diffs = [Difference(**d) for d in ((report.details.get("differences") or []) if report else [])
             if d.get("region") == region and d.get("technology") == "postgresql"]
    out = Outcome(Generated())
    if not diffs:
        when = f"the drift report of {report.at.isoformat()[:16]}" if report else "no drift report on record"
        out.notes.append(f"nothing to capture: {when} lists no PostgreSQL difference in {environment}/{region}")
        return out
    cfg = dom.technologies["postgresql"]
    folder = dom.technology_dir("postgresql")
    adapter = adapter_class("postgresql").from_url(target, domain=domain, settings=cfg)
    try:
        applied = {e.version for e in adapter.read_ledger() if e.version and e.status == Status.SUCCESS}
    finally:
        adapter.close()
    catalog = discover(domain, "postgresql", folder).migrations.get("postgresql", [])
    versioned = [m for m in catalog if m.kind is Kind.VERSIONED]
    upto = sum(1 for m in versioned if str(m.version) in applied)
    naming = naming_for(folder, "postgresql", f"capture drift {environment} {region}", domain)
    with pg.Scratch(pg.scratch_server(target, scratch)) as s:
        base = s.create()
        if upto:
            # the region's placeholders, as its runs fill them in
            pg.apply_migrations(base, folder, domain=domain, schema=cfg.schema_, upto=upto,
                                placeholders={**env.placeholders, **env.regions[region].placeholders})
        generated = pg.generate(base, target, naming=naming, scratch_url=s.admin_url, domain=domain,
                                schema=cfg.schema_)
    header = "".join(f"-- drift {d}\n" for d in diffs[:20])
    generated.files = [GeneratedFile(f.name, _after_directives(rerunnable(f.text), header) if f.kind == "versioned"
                                     else f.text, f.kind, f.notes) for f in generated.files]
    out.generated = generated
    out.notes.append(f"{len(diffs)} difference(s) reported at {report.at.isoformat()[:16]} on {environment}/{region}; "
                     f"the scratch database holds the {upto} version(s) the target's ledger lists as applied")
    out.findings = lint_generated(generated.files, "postgresql", domain)
    if write_to is not None and generated.files:
        out.written = write(generated.files, write_to)
    return out


_RERUNNABLE = [
    (re.compile(r"(?im)\b(add\s+column)\s+(?!if\s+not\s+exists)"), r"\1 if not exists "),
    (re.compile(r"(?im)\b(drop\s+column)\s+(?!if\s+exists)"), r"\1 if exists "),
    (re.compile(r"(?im)^(create\s+table)\s+(?!if\s+not\s+exists)"), r"\1 if not exists "),
    (re.compile(r"(?im)^(create\s+(?:unique\s+)?index(?:\s+concurrently)?)\s+(?!if\s+not\s+exists|concurrently)"),
     r"\1 if not exists "),
]


def rerunnable(text: str) -> str:
    """A captured hand change is already on the drifted target: its file must run there as a no-op
    (and for real everywhere else), so additions say IF NOT EXISTS and column drops IF EXISTS."""
    for pattern, repl in _RERUNNABLE:
        text = pattern.sub(repl, text)
    return text


def _after_directives(text: str, extra: str) -> str:
    """``extra`` comment lines after the file's directive line (which must stay first to count)."""
    lines = text.splitlines(keepends=True)
    at = 1 if lines and lines[0].startswith("-- polymigrate:") else 0
    return "".join(lines[:at]) + extra + "".join(lines[at:])
