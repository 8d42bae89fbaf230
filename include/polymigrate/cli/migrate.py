"""CLI verbs that change targets: migrate (alias apply), undo, baseline, flyway-import, repair, status.

Two ways to name the targets, the same for every verb:

* from the specs: ``-e ENV -d DOMAIN [-r REGION]``; connections come from ``AIRFLOW_CONN_<ID>``
  environment variables, the same ids Airflow resolves;
* ad hoc, like Flyway: ``--url postgresql://… --locations DIR [--placeholder k=v]`` runs any
  Flyway-style folder directly.

Exit codes: 0 done, 1 failed (the message names the file, statement and fix), 2 usage.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional
from urllib.parse import urlsplit

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from polymigrate.adapters import adapter_class
from polymigrate.adapters.base import Adapter
from polymigrate.catalog import Kind, Migration, discover
from polymigrate.cli.app import DEFAULT_SPECS, app, console, err_console
from polymigrate.cli.core import _print_problems, cli_connect
from polymigrate.commands import load_domain
from polymigrate.connections import env_var, redact
from polymigrate.errors import PolymigrateError, Problem, SpecError, TransientError
from polymigrate.events import default_actor
from polymigrate.executor import RunResult, migrate as run_migrate, undo_to
from polymigrate.ledger import RunContext
from polymigrate.reconcile import MigrationInfo, reconcile
from polymigrate.spec import TechnologyConfig

SCHEMES = {"postgresql": "postgresql", "postgres": "postgresql", "redis": "redis", "rediss": "redis",
           "http": "elasticsearch", "https": "elasticsearch", "elasticsearch": "elasticsearch", "opensearch": "elasticsearch",
           "mongodb": "mongodb", "mongo": "mongodb"}  # mongodb+srv too: the scheme is cut at '+'


@dataclass
class Target:
    """One (region, technology) to act on, with its migrations (undo files included) and context."""

    label: str
    technology: str
    connect: Callable[[], Adapter]
    migrations: list[Migration]
    ctx: RunContext
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Selection:
    """The options every verb shares, gathered so each verb stays a few lines."""

    environment: Optional[str]
    domain: Optional[str]
    regions: Optional[list[str]]
    technology: Optional[str]
    specs: Path
    url: Optional[str]
    locations: Optional[list[Path]]
    placeholders: Optional[list[str]]
    schema: Optional[str]
    table: Optional[str]
    lock_wait: Optional[float]
    skip_approval: bool = False
    needs_files: bool = True  # baseline and flyway-import work without migration files


def _usage(message: str) -> typer.Exit:
    err_console.print(f"[red]usage:[/] {message}", highlight=False)
    return typer.Exit(2)


def _placeholders(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _usage(f"--placeholder {item!r}: expected key=value")
        out[key] = value
    return out


def _discover_locations(domain: str, technology: str, locations: list[Path]) -> tuple[list[Migration], list[Problem]]:
    """Every migration under the folders, in apply order; duplicates across folders are problems."""
    problems: list[Problem] = []
    found: list[Migration] = []
    for folder in locations:
        if not folder.is_dir():
            problems.append(Problem(str(folder), "not a folder", hint="pass the folder holding V…__….sql files"))
            continue
        cat = discover(domain, technology, folder)
        problems += cat.problems
        found += cat.migrations.get(technology, [])
    seen: dict[tuple, Migration] = {}
    for m in found:
        key = (m.kind, m.version if m.version is not None else m.description.lower())
        if key in seen:
            problems.append(Problem(str(m.path), f"duplicate {m.id} (also {seen[key].path})", hint="renumber one"))
        seen[key] = m
    order = {Kind.VERSIONED: 0, Kind.REPEATABLE: 1, Kind.UNDO: 2}
    ms = sorted(seen.values(), key=lambda m: (order[m.kind], m.version.parts if m.version else (),
                                              m.description.lower()))
    return ms, problems


def _run_id() -> str:
    return f"cli-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _targets(sel: Selection) -> Iterator[Target]:
    """The targets the options name, in order; raises typer.Exit(2) on contradictory options."""
    actor = default_actor()
    run_id = _run_id()
    if sel.url:
        if sel.environment:
            raise _usage("give either --url (ad hoc) or -e/--environment (specs), not both")
        if sel.needs_files and not sel.locations:
            raise _usage("--url needs --locations DIR (the folder of migration files)")
        tech = SCHEMES.get(urlsplit(sel.url).scheme.split("+")[0])
        if tech is None:
            raise _usage(f"unsupported URL scheme in --url; use one of {', '.join(sorted(SCHEMES))}")
        domain = sel.domain or "adhoc"
        migrations, problems = _discover_locations(domain, tech, sel.locations or [])
        settings = TechnologyConfig(schema=sel.schema, ledger=sel.table)
        ctx = RunContext(domain=domain, actor=actor, run_id=run_id, placeholders=_placeholders(sel.placeholders),
                         lock_wait_seconds=sel.lock_wait if sel.lock_wait is not None else 300.0)
        cls = adapter_class(tech)
        yield Target(redact(sel.url), tech,
                     lambda: cls.from_url(sel.url, domain=domain, settings=settings), migrations, ctx, problems)
        return
    if not (sel.environment and sel.domain):
        raise _usage("name the targets: -e ENV -d DOMAIN (specs), or --url URL --locations DIR (ad hoc)")
    project, domain, catalog = load_domain(sel.specs, sel.domain)
    env = project.environments.get(sel.environment)
    if env is None:
        raise _usage(f"unknown environment '{sel.environment}'; known: {sorted(project.environments)}")
    if env.policy.approvals.required and not sel.skip_approval:
        err_console.print(f"[red]{sel.environment} requires {env.policy.approvals.required} approval(s)[/]: run it "
                          "through the Airflow DAG, which collects them, or pass --skip-approval to take "
                          "responsibility yourself", highlight=False)
        raise typer.Exit(2)
    connect = cli_connect(project, domain, env)
    policy = env.policy
    regions = project.regions_of(domain, env)
    unknown = set(sel.regions or []) - {r.name for r in regions}
    if unknown:
        raise _usage(f"unknown region(s) {sorted(unknown)}; {domain.name} runs in {[r.name for r in regions]}")
    for region in regions:
        if sel.regions and region.name not in sel.regions:
            continue
        for tech in domain.technology_order():
            if sel.technology and tech != sel.technology:
                continue
            ctx = RunContext(domain=domain.name, environment=env.name, region=region.name, actor=actor,
                             run_id=run_id, placeholders={**env.placeholders, **region.placeholders},
                             lock_timeout=policy.lock_timeout, statement_timeout=policy.statement_timeout,
                             lock_wait_seconds=sel.lock_wait if sel.lock_wait is not None else policy.lock_wait_seconds)
            conn_id = env.connection_id(region.name, tech)

            def make(region=region.name, tech=tech, conn_id=conn_id) -> Adapter:
                adapter = connect(region, tech)
                if adapter is None:
                    raise SpecError([Problem(conn_id, "connection is not configured",
                                             hint=f"export {env_var(conn_id)}=<url>")])
                return adapter
            yield Target(f"{region.name}/{tech} ({conn_id})", tech, make, catalog.migrations.get(tech, []), ctx)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                    TimeElapsedColumn(), console=console, transient=False)


_ROWS = 40  # a 500-file run prints its first and last files, not a 500-row table


def _report(result: RunResult, verb: str) -> None:
    console.print(f"[green]✓[/] {result.target}: {len(result.applied)} {verb}, now at {result.current_version or '-'}",
                  highlight=False)
    if not result.applied:
        return
    table = Table()
    for col in ("version", "script", "action", "ms"):
        table.add_column(col)
    shown = result.applied if len(result.applied) <= _ROWS else result.applied[:_ROWS // 2] + result.applied[-_ROWS // 2:]
    for n, a in enumerate(shown):
        if len(shown) < len(result.applied) and n == _ROWS // 2:
            table.add_row("…", f"{len(result.applied) - len(shown)} more (`polymigrate status` lists all)", "", "")
        table.add_row(a["version"] or "R", a["script"], a["action"], str(a["ms"]))
    console.print(table)


def _fail(exc: Exception, label: str) -> typer.Exit:
    kind = "transient, safe to retry" if isinstance(exc, TransientError) else "failed"
    # soft_wrap: a long path, statement or lock holder stays on one line, greppable and copyable
    err_console.print(f"[bold red]{label}: {'invalid input' if isinstance(exc, SpecError) else kind}[/]",
                      highlight=False, soft_wrap=True)
    err_console.print(str(exc), highlight=False, soft_wrap=True, markup=False)
    return typer.Exit(1)


def _show_logs() -> None:
    """Adapters log what a person at the terminal should see (e.g. whose lock a run waits for)."""
    logger = logging.getLogger("polymigrate")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def _each(sel: Selection, action: Callable[[Target, Adapter], None]) -> None:
    """Run ``action`` per target in order; stop at the first failure with exit code 1."""
    _show_logs()
    for t in _targets(sel):
        if t.problems:
            _print_problems(t.problems, f"{t.label}: migrations are not valid")
            raise typer.Exit(1)
        try:
            adapter = t.connect()
        except PolymigrateError as exc:
            raise _fail(exc, t.label) from None
        try:
            action(t, adapter)
        except PolymigrateError as exc:
            raise _fail(exc, t.label) from None
        finally:
            adapter.close()


def _on_progress(progress: Progress, task_id) -> Callable[[int, int, MigrationInfo], None]:
    def update(n: int, total: int, info: MigrationInfo) -> None:
        progress.update(task_id, total=total, completed=n - 1,
                        description=f"{info.version or 'R'} {info.script}"[:60])
    return update


# -- options shared by every verb ---------------------------------------------------------------
EnvOpt = typer.Option(None, "--environment", "-e", help="environment from the specs")
DomainOpt = typer.Option(None, "--domain", "-d", help="domain (ad hoc: the ledger's domain, default 'adhoc')")
RegionOpt = typer.Option(None, "--region", "-r", help="only these regions")
TechOpt = typer.Option(None, "--technology", "-t", help="only this technology")
SpecsOpt = typer.Option(Path(DEFAULT_SPECS), "--specs", "-s", help="folder holding environments/ and the domains")
UrlOpt = typer.Option(None, "--url", help="ad hoc target, e.g. postgresql://user@host/db (password from PGPASSWORD or ~/.pgpass)")
LocOpt = typer.Option(None, "--locations", "-l", help="ad hoc: folder(s) of Flyway-style migration files")
PhOpt = typer.Option(None, "--placeholder", "-p", help="ad hoc: ${key} value, as key=value (repeatable)")
SchemaOpt = typer.Option(None, "--schema", help="ad hoc: schema the migrations run in (search_path)")
TableOpt = typer.Option(None, "--table", help="ad hoc: ledger table (table or schema.table)")
WaitOpt = typer.Option(None, "--lock-wait", help="seconds to wait for another run's lock (default: policy, 300)")
SkipOpt = typer.Option(False, "--skip-approval", help="run in an environment that requires approvals, on your own authority")


def _migrate(environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
             region: Optional[list[str]] = RegionOpt, technology: Optional[str] = TechOpt,
             specs: Path = SpecsOpt, url: Optional[str] = UrlOpt, locations: Optional[list[Path]] = LocOpt,
             placeholder: Optional[list[str]] = PhOpt, schema: Optional[str] = SchemaOpt,
             table: Optional[str] = TableOpt, lock_wait: Optional[float] = WaitOpt,
             skip_approval: bool = SkipOpt,
             target: Optional[str] = typer.Option(None, "--target", help="stop at this version"),
             out_of_order: bool = typer.Option(False, "--out-of-order", help="also apply pending versions older than the newest applied"),
             dry_run: bool = typer.Option(False, "--dry-run", help="say what would run, change nothing")) -> None:
    """Apply pending migrations: validate against the ledger, then each file with its ledger row."""
    sel = Selection(environment, domain, region, technology, specs, url, locations, placeholder, schema, table,
                    lock_wait, skip_approval)

    def act(t: Target, adapter: Adapter) -> None:
        migs = [m for m in t.migrations if m.kind is not Kind.UNDO]
        with _progress() as progress:
            task = progress.add_task(t.label, total=None)
            result = run_migrate(adapter, migs, t.ctx, target=target, out_of_order=out_of_order, dry_run=dry_run,
                                 on_progress=_on_progress(progress, task))
            progress.update(task, total=len(result.applied) or 1, completed=len(result.applied) or 1,
                            description=t.label)
        _report(result, "would apply" if dry_run else "applied")

    _each(sel, act)


app.command("migrate")(_migrate)
app.command("apply", help="Alias of migrate.")(_migrate)


@app.command()
def undo(to: str = typer.Option(..., "--to", help="revert every version above this one (0: all)"),
         environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
         region: Optional[list[str]] = RegionOpt, technology: Optional[str] = TechOpt, specs: Path = SpecsOpt,
         url: Optional[str] = UrlOpt, locations: Optional[list[Path]] = LocOpt,
         placeholder: Optional[list[str]] = PhOpt, schema: Optional[str] = SchemaOpt,
         table: Optional[str] = TableOpt, lock_wait: Optional[float] = WaitOpt, skip_approval: bool = SkipOpt,
         dry_run: bool = typer.Option(False, "--dry-run")) -> None:
    """Revert applied versions above --to, newest first, through their U files (MongoDB: down() in the file)."""
    sel = Selection(environment, domain, region, technology, specs, url, locations, placeholder, schema, table,
                    lock_wait, skip_approval)

    def act(t: Target, adapter: Adapter) -> None:
        with _progress() as progress:
            task = progress.add_task(t.label, total=None)
            result = undo_to(adapter, t.migrations, t.ctx, to, dry_run=dry_run, on_progress=_on_progress(progress, task))
            progress.update(task, total=len(result.applied) or 1, completed=len(result.applied) or 1,
                            description=t.label)
        _report(result, "would undo" if dry_run else "undone")

    _each(sel, act)


@app.command()
def baseline(version: Optional[str] = typer.Option(None, "--version", help="mark up to this version as applied"),
             description: str = typer.Option("<< Baseline >>", "--description"),
             from_flyway: bool = typer.Option(False, "--from-flyway", help="import flyway_schema_history instead"),
             flyway_schema: str = typer.Option("public", "--flyway-schema"),
             flyway_table: str = typer.Option("flyway_schema_history", "--flyway-table"),
             environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
             region: Optional[list[str]] = RegionOpt, technology: Optional[str] = TechOpt, specs: Path = SpecsOpt,
             url: Optional[str] = UrlOpt, locations: Optional[list[Path]] = LocOpt,
             schema: Optional[str] = SchemaOpt, table: Optional[str] = TableOpt,
             lock_wait: Optional[float] = WaitOpt, skip_approval: bool = SkipOpt) -> None:
    """Adopt an existing database: mark versions up to --version as applied, or import Flyway's history."""
    if bool(version) == from_flyway:
        raise _usage("give exactly one of --version V or --from-flyway")
    sel = Selection(environment, domain, region, technology, specs, url, locations, None, schema,
                    table, lock_wait, skip_approval, needs_files=False)

    def act(t: Target, adapter: Adapter) -> None:
        with adapter.lock(t.ctx.owner, t.ctx.lock_wait_seconds):
            if from_flyway:
                importer = getattr(adapter, "import_flyway", None)
                if importer is None:
                    raise PolymigrateError(f"{t.technology} has no Flyway history to import")
                n = importer(t.ctx, schema=flyway_schema, table=flyway_table)
                console.print(f"[green]✓[/] {t.label}: imported {n} row(s) from {flyway_schema}.{flyway_table}"
                              + ("" if n else " (already imported)"))
            else:
                adapter.baseline(version, description, t.ctx)  # type: ignore[arg-type]
                console.print(f"[green]✓[/] {t.label}: baselined at {version}")

    _each(sel, act)


@app.command("flyway-import")
def flyway_import(flyway_schema: str = typer.Option("public", "--flyway-schema"),
                  flyway_table: str = typer.Option("flyway_schema_history", "--flyway-table"),
                  environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
                  region: Optional[list[str]] = RegionOpt, specs: Path = SpecsOpt, url: Optional[str] = UrlOpt,
                  schema: Optional[str] = SchemaOpt, table: Optional[str] = TableOpt,
                  lock_wait: Optional[float] = WaitOpt, skip_approval: bool = SkipOpt) -> None:
    """Import a Flyway-managed database's history so it continues under polymigrate (= baseline --from-flyway)."""
    baseline(version=None, description="", from_flyway=True, flyway_schema=flyway_schema, flyway_table=flyway_table,
             environment=environment, domain=domain, region=region, technology="postgresql", specs=specs, url=url,
             locations=None, schema=schema, table=table, lock_wait=lock_wait, skip_approval=skip_approval)


@app.command()
def repair(environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
           region: Optional[list[str]] = RegionOpt, technology: Optional[str] = TechOpt, specs: Path = SpecsOpt,
           url: Optional[str] = UrlOpt, locations: Optional[list[Path]] = LocOpt,
           schema: Optional[str] = SchemaOpt, table: Optional[str] = TableOpt,
           lock_wait: Optional[float] = WaitOpt, skip_approval: bool = SkipOpt) -> None:
    """Realign the checksums of changed files; mark failed, half-done and missing rows deleted."""
    sel = Selection(environment, domain, region, technology, specs, url, locations, None, schema, table,
                    lock_wait, skip_approval)

    def act(t: Target, adapter: Adapter) -> None:
        with adapter.lock(t.ctx.owner, t.ctx.lock_wait_seconds):
            report = adapter.repair(t.migrations, t.ctx)
        console.print(f"[green]✓[/] {t.label}: realigned {len(report.realigned)}, removed {len(report.removed)}")
        for s in report.realigned:
            console.print(f"  realigned {s}", highlight=False)
        for s in report.removed:
            console.print(f"  removed   {s}", highlight=False)

    _each(sel, act)


@app.command()
def status(environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
           region: Optional[list[str]] = RegionOpt, technology: Optional[str] = TechOpt, specs: Path = SpecsOpt,
           url: Optional[str] = UrlOpt, locations: Optional[list[Path]] = LocOpt,
           schema: Optional[str] = SchemaOpt, table: Optional[str] = TableOpt) -> None:
    """Live state of every migration (pending, success, changed, …) from the target's ledger; works ad hoc too."""
    sel = Selection(environment, domain, region, technology, specs, url, locations, None, schema, table, None, True)

    def act(t: Target, adapter: Adapter) -> None:
        migs = [m for m in t.migrations if m.kind is not Kind.UNDO]
        tbl = Table(title=t.label, title_justify="left")
        for col in ("version", "description", "script", "state", "installed on", "ms"):
            tbl.add_column(col)
        for i in reconcile(migs, adapter.read_ledger()):
            e = i.entry
            tbl.add_row(i.version or "R", i.description, i.script, i.state.value,
                        e.installed_on.isoformat(timespec="seconds") if e and e.installed_on else "",
                        str(e.execution_time) if e else "")
        console.print(tbl)

    _each(sel, act)
