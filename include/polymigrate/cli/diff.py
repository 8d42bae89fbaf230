"""CLI verbs ``polymigrate diff`` and ``polymigrate undo-gen`` (issue 26, docs/diff.md).

Exit codes: 0 done (also: nothing to change), 1 failed or an undo refused (the message names the
statement), 2 usage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from polymigrate.cli.app import DEFAULT_SPECS, app, console, err_console
from polymigrate.commands import diff as cmd
from polymigrate.errors import PolymigrateError

_STYLE = {"info": "dim", "low": "cyan", "medium": "yellow", "high": "red", "critical": "bold red"}


def _source(value: str) -> str | Path:
    return value if "://" in value else Path(value)


def _placeholders(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not (sep and key):
            raise typer.BadParameter(f"--placeholder {item!r}: expected key=value")
        out[key] = value
    return out


def _show(outcome: cmd.Outcome, *, printing: bool) -> None:
    g = outcome.generated
    for note in outcome.notes:
        err_console.print(note, highlight=False, soft_wrap=True, markup=False)
    if g.empty and not g.refusals:
        console.print("no difference: nothing to generate", highlight=False)
    for f in g.files:
        where = next((str(p) for p in outcome.written if p.name == f.name), None)
        if printing:
            console.print(f"-- ===== {f.name}", highlight=False, markup=False)
            console.print(f.text, highlight=False, markup=False, soft_wrap=True)
        elif where:
            console.print(f"wrote {where}", highlight=False, markup=False)
        for note in f.notes:
            err_console.print(f"{f.name}: {note}", highlight=False, soft_wrap=True, markup=False)
        for finding in outcome.findings.get(f.name, []):
            style = _STYLE.get(finding.severity, "")
            text = escape(f"lint {finding}")  # "[high]" is the severity, not rich markup
            err_console.print(f"[{style}]{text}[/]" if style else text, highlight=False, soft_wrap=True)
    for refusal in g.refusals:
        err_console.print(f"[red]refused:[/] {escape(refusal)}", highlight=False, soft_wrap=True)


def _fail(exc: PolymigrateError, label: str) -> typer.Exit:
    err_console.print(f"[bold red]{label}: failed[/]", highlight=False, soft_wrap=True)
    err_console.print(str(exc), highlight=False, soft_wrap=True, markup=False)
    return typer.Exit(1)


@app.command("diff")
def diff_command(
    current: Optional[str] = typer.Option(None, "--current", help="the state now: a target URL, or a domain's migrations folder (applied to a scratch database)"),
    desired: Optional[str] = typer.Option(None, "--desired", help="the state wanted: a target URL, a declarative schema/ folder of plain DDL, or a migrations folder"),
    write_to: Optional[Path] = typer.Option(None, "--write", help="write the files into this folder (the domain's); without it they are printed"),
    from_drift: Optional[str] = typer.Option(None, "--from-drift", metavar="ENV/REGION", help="capture what the latest drift report found on that target as the domain's next file"),
    domain: Optional[str] = typer.Option(None, "-d", "--domain", help="the domain (with --from-drift)"),
    specs: Path = typer.Option(Path(DEFAULT_SPECS), "--specs", help="spec tree (with --from-drift)"),
    description: str = typer.Option("generated", "--description", help="the file names' description part"),
    scratch: Optional[str] = typer.Option(None, "--scratch", envvar="POLYMIGRATE_SCRATCH_PG", help="server for scratch databases (admin URL); default: the current target's server"),
    schema: Optional[str] = typer.Option(None, "--schema", help="the domain's PostgreSQL schema (search_path while a folder is applied)"),
    undo: bool = typer.Option(True, "--undo/--no-undo", help="also generate each V file's U file"),
    placeholder: Optional[list[str]] = typer.Option(None, "--placeholder", help="key=value for ${key} in the migrations applied to a scratch database (repeatable)"),
) -> None:
    """Generate the next migration(s) that bring --current to --desired, linted."""
    try:
        if from_drift:
            if current or desired:
                raise typer.BadParameter("--from-drift reads both states itself: drop --current/--desired")
            env, sep, region = from_drift.partition("/")
            if not (sep and env and region and domain):
                raise typer.BadParameter("use --from-drift ENV/REGION -d DOMAIN")
            outcome = cmd.from_drift(specs, env, region, domain, write_to=write_to, scratch=scratch)
        else:
            if not (current and desired):
                raise typer.BadParameter("give --current URL|DIR and --desired URL|DIR (or --from-drift ENV/REGION)")
            outcome = cmd.diff(_source(current), _source(desired), write_to=write_to, description=description,
                               scratch=scratch, schema=schema, undo=undo, placeholders=_placeholders(placeholder))
    except typer.BadParameter as exc:
        err_console.print(f"[red]usage:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except PolymigrateError as exc:
        raise _fail(exc, "diff")
    _show(outcome, printing=write_to is None)


@app.command("undo-gen")
def undo_gen_command(
    file: Path = typer.Argument(..., help="the V…__….sql file whose U file to generate"),
    scratch: Optional[str] = typer.Option(None, "--scratch", envvar="POLYMIGRATE_SCRATCH_PG", help="server for scratch databases (admin URL); default: the test server of `make engines`"),
    schema: Optional[str] = typer.Option(None, "--schema", help="the domain's PostgreSQL schema"),
    print_only: bool = typer.Option(False, "--print", help="print the U file instead of writing it next to the V file"),
    placeholder: Optional[list[str]] = typer.Option(None, "--placeholder", help="key=value for ${key} in the earlier files (repeatable)"),
) -> None:
    """Write the U file of a PostgreSQL V file; refused, naming the statement, where going back loses data."""
    try:
        outcome = cmd.undo_gen(file, scratch=scratch, schema=schema, write_it=not print_only,
                               placeholders=_placeholders(placeholder))
    except typer.BadParameter as exc:
        err_console.print(f"[red]usage:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    except PolymigrateError as exc:
        raise _fail(exc, f"undo-gen {file}")
    _show(outcome, printing=print_only)
    if outcome.generated.refusals:
        raise typer.Exit(1)
