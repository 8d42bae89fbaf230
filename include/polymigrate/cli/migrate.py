"""CLI verbs that change targets: migrate (alias apply), undo, baseline, flyway-import, repair; and status.

Two ways to name the targets, the same for every verb:

* from the specs: ``-e ENV -d DOMAIN [-r REGION]``; connections come from ``AIRFLOW_CONN_<ID>``
  environment variables, the same ids Airflow resolves. The environment's policy applies exactly as
  in its DAG (``polymigrate.commands``): lint, approvals, the window, the promotion gate, the
  destructive ban, dependencies and the audit trail. Where people must approve, the command line
  cannot ask them: it refuses, unless ``policy.emergency.cli`` allows breaking the glass with
  ``--emergency-override --reason …``, recorded as ``overridden`` with who and why;
* ad hoc, like Flyway: ``--url postgresql://… --locations DIR [--placeholder k=v]`` runs any
  Flyway-style folder directly, recorded under environment ``adhoc``; refused against a target of a
  policy-bound environment.

With an audit store configured (``AIRFLOW_CONN_POLYMIGRATE_AUDIT``), or required by the
environment, every run of these verbs records its events as a DAG run does (``status`` only reads).
Exit codes: 0 done, 1 failed or refused (the message names the file, statement or rule and the fix),
2 usage.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from polymigrate.adapters.base import Adapter
from polymigrate.catalog import applicable
from polymigrate.cli.app import DEFAULT_SPECS, app, console, err_console
from polymigrate.cli.core import _print_problems, ledger_table
from polymigrate.commands import EnvironmentConnector, Run, RunParams, UsageError, Who, open_run
from polymigrate.commands import verbs
from polymigrate.commands.adhoc import AdhocRun, open_adhoc
from polymigrate.commands.failures import record_failure
from polymigrate.connections import AUDIT_CONN_ID, SCHEMES, technology_of, url_for
from polymigrate.errors import PolicyRefused, PolymigrateError, SpecError, TransientError
from polymigrate.executor import RunResult
from polymigrate.reconcile import MigrationInfo, reconcile


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
    override: bool = False
    reason: Optional[str] = None
    dry_run: bool = False
    target_version: Optional[str] = None
    out_of_order: bool = False
    needs_files: bool = True  # baseline and flyway-import work without migration files

    def params(self) -> RunParams:
        try:
            return RunParams(dry_run=self.dry_run, target_version=self.target_version, regions=self.regions or None,
                             allow_out_of_order=self.out_of_order,
                             technologies=[self.technology] if self.technology else None, override=self.override,
                             override_reason=(self.reason or "").strip() or None).checked(RunParams.CLI_NAMES)
        except UsageError as exc:
            raise _usage(str(exc)) from None


def _usage(message: str) -> typer.Exit:
    err_console.print(f"[red]usage:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _placeholders(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _usage(f"--placeholder {item!r}: expected key=value")
        out[key] = value
    return out


def _fail(exc: Exception, label: str) -> typer.Exit:
    if isinstance(exc, SpecError):
        kind = "invalid input"
    elif isinstance(exc, PolicyRefused):
        kind = "refused by policy"
    else:
        kind = "transient, safe to retry" if isinstance(exc, TransientError) else "failed"
    # soft_wrap: a long path, statement or lock holder stays on one line, greppable and copyable
    err_console.print(f"[bold red]{label}: {kind}[/]", highlight=False, soft_wrap=True)
    err_console.print(str(exc), highlight=False, soft_wrap=True, markup=False)
    return typer.Exit(1)


def _show_logs() -> None:
    """What a person at the terminal should see: adapters' notices (whose lock a run waits for) and the
    command layer's warnings (an override, what a dry run would be refused for)."""
    logger = logging.getLogger("polymigrate")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logging.getLogger("polymigrate.commands").setLevel(logging.WARNING)


@contextmanager
def _spec_run(sel: Selection, verb: str, *, record: bool = True) -> Iterator[Run]:
    """The environment's run: its policy, its audit store (required where the policy says so)."""
    if sel.url:
        raise _usage("give either --url (ad hoc) or -e/--environment (specs), not both")
    if not (sel.environment and sel.domain):
        raise _usage("name the targets: -e ENV -d DOMAIN (specs), or --url URL --locations DIR (ad hoc)")
    params, who = sel.params(), Who.cli()
    audit = (lambda: url_for(AUDIT_CONN_ID)) if record else None
    try:
        run = open_run(sel.specs, sel.domain, sel.environment, params=params, who=who, connector=EnvironmentConnector(),
                       audit=audit, lock_wait_seconds=sel.lock_wait,
                       trigger=verbs.trigger_details(who, params, verb, by=who.triggered_by) if record else None)
    except PolymigrateError as exc:
        if record:  # as a DAG task that could not open its run: the environment's store still gets it
            record_failure(None, exc, root=sel.specs, domain=sel.domain, environment=sel.environment, who=who,
                           audit=audit)
        raise _fail(exc, f"{sel.domain} in {sel.environment}") from None
    try:
        unknown = set(sel.regions or []) - {r.name for r in run.project.regions_of(run.domain, run.environment)}
        if unknown:
            raise _usage(f"unknown region(s) {sorted(unknown)}; {run.domain.name} runs in "
                         f"{[r.name for r in run.project.regions_of(run.domain, run.environment)]}")
        yield run
    except PolymigrateError as exc:
        if record:  # compliance reads a run's outcome from the audit store, wherever it ran
            record_failure(run, exc, retryable=isinstance(exc, TransientError))
        raise _fail(exc, f"{run.domain.name} in {run.environment.name}") from None
    except typer.Exit:  # a usage error, already said
        raise
    except Exception as exc:  # a driver error or a bug fails the run all the same
        if record:
            record_failure(run, exc)
        raise
    finally:
        run.close()


@contextmanager
def _adhoc(sel: Selection, verb: str, *, record: bool = True) -> Iterator[tuple[AdhocRun, Adapter]]:
    """The ad hoc target and its open adapter; its files are checked first."""
    if sel.environment:
        raise _usage("give either --url (ad hoc) or -e/--environment (specs), not both")
    if sel.override:
        raise _usage("--emergency-override overrides an environment's policy: use it with -e ENV (an ad hoc run "
                     "has no policy to override, and none may be bypassed through --url)")
    if sel.needs_files and not sel.locations:
        raise _usage("--url needs --locations DIR (the folder of migration files)")
    tech = technology_of(sel.url or "")
    if tech is None:
        raise _usage(f"unsupported URL scheme in --url; use one of {', '.join(sorted(SCHEMES))}")
    placeholders, params = _placeholders(sel.placeholders), sel.params()
    try:
        run = open_adhoc(sel.url or "", tech, domain=sel.domain, locations=sel.locations or [], placeholders=placeholders,
                         schema=sel.schema, table=sel.table, lock_wait=sel.lock_wait, specs=sel.specs, who=Who.cli(),
                         audit=lambda: url_for(AUDIT_CONN_ID), verb=verb, params=params, record=record)
    except PolymigrateError as exc:
        raise _fail(exc, "ad hoc run") from None
    try:
        if run.problems:
            _print_problems(run.problems, f"{run.label}: migrations are not valid")
            run.record_failure(SpecError(run.problems))
            raise typer.Exit(1)
        adapter = run.open()
        try:
            yield run, adapter
        finally:
            adapter.close()
    except PolicyRefused as exc:  # on record already, as `refused`
        raise _fail(exc, run.label) from None
    except PolymigrateError as exc:  # as a spec run's: the outcome is in the store (with one configured)
        run.record_failure(exc, retryable=isinstance(exc, TransientError))
        raise _fail(exc, run.label) from None
    except typer.Exit:
        raise
    except Exception as exc:  # a driver error or a bug fails the run all the same
        run.record_failure(exc)
        raise
    finally:
        run.close()


class _Display:
    """A progress bar per target and the table of what it did (``verbs.Callbacks``)."""

    _ROWS = 40  # a 500-file run prints its first and last files, not a 500-row table

    def __init__(self, verb: str):
        self.verb, self.progress, self.task = verb, None, None

    def callbacks(self) -> verbs.Callbacks:
        return verbs.Callbacks(target=self.start, progress=self.update, result=self.done)

    def start(self, label: str) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("files"),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.progress.start()
        self.label = label
        self.task = self.progress.add_task(label, total=None)

    def update(self, n: int, total: int, info: MigrationInfo) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=total, completed=n - 1,
                                 description=f"{info.version or 'R'} {info.script}"[:60])

    def done(self, result: RunResult) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=len(result.applied) or 1, completed=len(result.applied) or 1,
                                 description=self.label)
            self.progress.stop()
            self.progress = None
        console.print(f"[green]✓[/] {result.target}: {len(result.applied)} {self.verb}, now at "
                      f"{result.current_version or '-'}", highlight=False)
        if not result.applied:
            return
        table = Table()
        for col in ("version", "script", "action", "ms"):
            table.add_column(col)
        rows, half = result.applied, self._ROWS // 2
        shown = rows if len(rows) <= self._ROWS else rows[:half] + rows[-half:]
        for n, a in enumerate(shown):
            if len(shown) < len(rows) and n == half:
                table.add_row("…", f"{len(rows) - len(shown)} more (`polymigrate status` lists all)", "", "")
            table.add_row(a["version"] or "R", a["script"], a["action"], str(a["ms"]))
        console.print(table)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _display(verb: str, action: Callable[[verbs.Callbacks], object]) -> None:
    shown = _Display(verb)
    try:
        action(shown.callbacks())
    finally:
        shown.stop()


# -- options shared by every verb ---------------------------------------------------------------
EnvOpt = typer.Option(None, "--environment", "-e", help="environment from the specs (its policy applies)")
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
OverrideOpt = typer.Option(False, "--emergency-override",
                           help="break glass where the environment's policy.emergency.cli allows it: run without its "
                                "approvals and past the gates an override passes; needs --reason; recorded")
ReasonOpt = typer.Option(None, "--reason", help="why (e.g. the incident id); recorded with your name")
SkipOpt = typer.Option(False, "--skip-approval", hidden=True)


def _no_skip(skip_approval: bool) -> None:
    if skip_approval:
        raise _usage("--skip-approval is gone: an environment's approvals are collected by its DAG; in an emergency, "
                     "--emergency-override --reason … where the policy allows it (policy.emergency.cli), recorded "
                     "with your name")


def _migrate(environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
             region: Optional[list[str]] = RegionOpt, technology: Optional[str] = TechOpt,
             specs: Path = SpecsOpt, url: Optional[str] = UrlOpt, locations: Optional[list[Path]] = LocOpt,
             placeholder: Optional[list[str]] = PhOpt, schema: Optional[str] = SchemaOpt,
             table: Optional[str] = TableOpt, lock_wait: Optional[float] = WaitOpt,
             emergency_override: bool = OverrideOpt, reason: Optional[str] = ReasonOpt,
             skip_approval: bool = SkipOpt,
             target: Optional[str] = typer.Option(None, "--target", help="stop at this version"),
             out_of_order: bool = typer.Option(False, "--out-of-order", help="also apply pending versions older than the newest applied"),
             dry_run: bool = typer.Option(False, "--dry-run", help="say what would run, change nothing")) -> None:
    """Apply pending migrations: validate against the ledger, then each file with its ledger row."""
    _no_skip(skip_approval)
    sel = Selection(environment, domain, region, technology, specs, url, locations, placeholder, schema, table,
                    lock_wait, emergency_override, reason, dry_run, target, out_of_order)
    _show_logs()
    verb = "would apply" if dry_run else "applied"
    if url:
        with _adhoc(sel, "migrate") as (run, adapter):
            p = run.params
            _display(verb, lambda show: (show.target(run.label), show.result(verbs.migrate(
                adapter, run.migrations, run.ctx, target_version=p.target_version, out_of_order=p.allow_out_of_order,
                dry_run=p.dry_run, sink=run.sink, on_progress=show.progress))))
        return
    with _spec_run(sel, "migrate") as run:
        _display(verb, lambda show: verbs.migrate_environment(run, show))


app.command("migrate")(_migrate)
app.command("apply", help="Alias of migrate.")(_migrate)


@app.command()
def undo(to: str = typer.Option(..., "--to", help="revert every version above this one (0: all)"),
         environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
         region: Optional[list[str]] = RegionOpt, technology: Optional[str] = TechOpt, specs: Path = SpecsOpt,
         url: Optional[str] = UrlOpt, locations: Optional[list[Path]] = LocOpt,
         placeholder: Optional[list[str]] = PhOpt, schema: Optional[str] = SchemaOpt,
         table: Optional[str] = TableOpt, lock_wait: Optional[float] = WaitOpt,
         emergency_override: bool = OverrideOpt, reason: Optional[str] = ReasonOpt, skip_approval: bool = SkipOpt,
         dry_run: bool = typer.Option(False, "--dry-run")) -> None:
    """Revert applied versions above --to, newest first, through their U files (MongoDB: down() in the file)."""
    _no_skip(skip_approval)
    sel = Selection(environment, domain, region, technology, specs, url, locations, placeholder, schema, table,
                    lock_wait, emergency_override, reason, dry_run)
    _show_logs()
    verb = "would undo" if dry_run else "undone"
    if url:
        with _adhoc(sel, "undo") as (run, adapter):
            _display(verb, lambda show: (show.target(run.label), show.result(verbs.undo(
                adapter, run.migrations, run.ctx, to, dry_run=dry_run, sink=run.sink, on_progress=show.progress))))
        return
    with _spec_run(sel, "undo") as run:
        _display(verb, lambda show: verbs.undo_environment(run, to, show))


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
             lock_wait: Optional[float] = WaitOpt, emergency_override: bool = OverrideOpt,
             reason: Optional[str] = ReasonOpt, skip_approval: bool = SkipOpt) -> None:
    """Adopt an existing database: mark versions up to --version as applied, or import Flyway's history."""
    _no_skip(skip_approval)
    if bool(version) == from_flyway:
        raise _usage("give exactly one of --version V or --from-flyway")
    sel = Selection(environment, domain, region, technology, specs, url, locations, None, schema, table,
                    lock_wait, emergency_override, reason, needs_files=False)
    _show_logs()

    def act(label: str, adapter: Adapter, ctx, sink) -> None:
        if from_flyway:
            n = verbs.adopt(adapter, [], ctx, tool="flyway", source=f"{flyway_schema}.{flyway_table}", sink=sink).imported
            console.print(f"[green]✓[/] {label}: imported {n} row(s) from {flyway_schema}.{flyway_table}"
                          + ("" if n else " (already imported)"))
        else:
            verbs.baseline(adapter, ctx, version, description, sink)  # type: ignore[arg-type]
            console.print(f"[green]✓[/] {label}: baselined at {version}")

    _maintain(sel, "baseline", act)


@app.command("flyway-import")
def flyway_import(flyway_schema: str = typer.Option("public", "--flyway-schema"),
                  flyway_table: str = typer.Option("flyway_schema_history", "--flyway-table"),
                  environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
                  region: Optional[list[str]] = RegionOpt, specs: Path = SpecsOpt, url: Optional[str] = UrlOpt,
                  schema: Optional[str] = SchemaOpt, table: Optional[str] = TableOpt,
                  lock_wait: Optional[float] = WaitOpt, emergency_override: bool = OverrideOpt,
                  reason: Optional[str] = ReasonOpt, skip_approval: bool = SkipOpt) -> None:
    """Import a Flyway-managed database's history so it continues under polymigrate (= baseline --from-flyway)."""
    baseline(version=None, description="", from_flyway=True, flyway_schema=flyway_schema, flyway_table=flyway_table,
             environment=environment, domain=domain, region=region, technology="postgresql", specs=specs, url=url,
             locations=None, schema=schema, table=table, lock_wait=lock_wait, emergency_override=emergency_override,
             reason=reason, skip_approval=skip_approval)


@app.command()
def repair(environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
           region: Optional[list[str]] = RegionOpt, technology: Optional[str] = TechOpt, specs: Path = SpecsOpt,
           url: Optional[str] = UrlOpt, locations: Optional[list[Path]] = LocOpt,
           schema: Optional[str] = SchemaOpt, table: Optional[str] = TableOpt,
           lock_wait: Optional[float] = WaitOpt, emergency_override: bool = OverrideOpt,
           reason: Optional[str] = ReasonOpt, skip_approval: bool = SkipOpt) -> None:
    """Realign the checksums of changed files; mark rows whose file is gone deleted (kept for the record).
    A half-done file keeps its row and progress, so the next run resumes after what committed."""
    _no_skip(skip_approval)
    sel = Selection(environment, domain, region, technology, specs, url, locations, None, schema, table,
                    lock_wait, emergency_override, reason)
    _show_logs()

    def act(label: str, adapter: Adapter, ctx, sink, migrations) -> None:
        report = verbs.repair(adapter, migrations, ctx, sink)
        console.print(f"[green]✓[/] {label}: realigned {len(report.realigned)}, marked deleted {len(report.removed)}")
        for s in report.realigned:
            console.print(f"  realigned {s}", highlight=False)
        for s in report.removed:
            console.print(f"  deleted   {s} (its row is kept, marked deleted)", highlight=False)

    _maintain(sel, "repair", act, with_files=True)


def _maintain(sel: Selection, verb: str, act: Callable, with_files: bool = False) -> None:
    """A ledger verb on the targets the options name: ad hoc, or every target of the environment once
    its policy allowed it."""
    if sel.url:
        with _adhoc(sel, verb) as (run, adapter):
            act(run.label, adapter, run.ctx, run.sink, *([run.migrations] if with_files else []))
        return
    with _spec_run(sel, verb) as run:
        verbs.each_target(run, verb, lambda region, tech, adapter, ctx: act(
            f"{region}/{tech} ({run.environment.connection_id(region, tech)})", adapter, ctx, run.sink,
            *([run.migrations(tech)] if with_files else [])))


@app.command()
def status(environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
           region: Optional[list[str]] = RegionOpt, technology: Optional[str] = TechOpt, specs: Path = SpecsOpt,
           url: Optional[str] = UrlOpt, locations: Optional[list[Path]] = LocOpt,
           schema: Optional[str] = SchemaOpt, table: Optional[str] = TableOpt) -> None:
    """Live state of every migration (pending, success, changed, …) from the target's ledger; works ad hoc too."""
    sel = Selection(environment, domain, region, technology, specs, url, locations, None, schema, table, None)

    def show(label: str, infos: list[MigrationInfo]) -> None:
        console.print(ledger_table(label, infos))

    _show_logs()
    if url:
        with _adhoc(sel, "status", record=False) as (run, adapter):
            show(run.label, reconcile(applicable(run.migrations), adapter.read_ledger()))
        return
    with _spec_run(sel, "status", record=False) as run:
        for r, tech in [(r.name, t) for r in run.regions() for t in run.technologies(r.name)]:
            with run.target(r, tech) as adapter:
                show(f"{r}/{tech} ({run.environment.connection_id(r, tech)})",
                     reconcile(run.catalog.applicable(tech), adapter.read_ledger()))
