"""CLI verbs over the spec tree: validate, plan, info, approve-status, new (read only; nothing recorded)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from polymigrate.adapters import TECHNOLOGIES
from polymigrate.catalog import EXTENSIONS, PHASES, discover_domain, next_version
from polymigrate.cli.app import DEFAULT_SPECS, app, console, err_console
from polymigrate.commands import EnvironmentConnector, RunParams, Who, open_run, plan_domain, validate_project
from polymigrate.commands.gates import plan_gates
from polymigrate.connections import AUDIT_CONN_ID, url_for
from polymigrate.errors import PolymigrateError
from polymigrate.versions import Version

SpecsArg = typer.Option(DEFAULT_SPECS, "--specs", "-s", help="folder holding environments/ and the domains")


def _print_problems(problems, title: str) -> None:
    err_console.print(f"[bold red]{title}[/]")
    for p in problems:
        where = p.file if p.line is None else f"{p.file}:{p.line}"
        # escaped: a hint such as ``phases: [expand, migrate]`` is text, not console markup (it vanished)
        err_console.print(f"  [red]✗[/] [bold]{escape(where)}[/]: {escape(p.message)}", highlight=False)
        if p.hint:
            err_console.print(f"      fix: {escape(p.hint)}", highlight=False, style="dim")


def _check_version(flag: str, value: str | None) -> None:
    """Exit 2 with Flyway's version rules when a version option cannot be one."""
    if value is None:
        return
    try:
        Version(value)
    except ValueError as exc:
        err_console.print(f"{flag}: {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def validate(specs: Path = typer.Argument(Path(DEFAULT_SPECS), help="spec folder"),
             domain: Optional[list[str]] = typer.Option(None, "--domain", "-d", help="only these domains"),
             as_json: bool = typer.Option(False, "--json")) -> None:
    """Check every spec and migration file; list every problem and exit 1 if there is one."""
    v = validate_project(specs, domain)
    problems = v.problems
    if as_json:
        console.print_json(json.dumps({"ok": not problems, "problems": [p.__dict__ for p in problems],
                                       "domains": sorted(v.catalogs), "broken": sorted(v.project.broken_domains)}))
        raise typer.Exit(1 if problems else 0)
    total = sum(len(ms) for c in v.catalogs.values() for ms in c.migrations.values())
    for n in v.notes:
        console.print(f"  [dim]note: {n}[/]", highlight=False)
    if problems:
        _print_problems(problems, f"{len(problems)} problem(s) in {specs}:")
        good = [d for d in v.good_domains()]
        console.print(f"domains still usable: {', '.join(good) or 'none'}")
        raise typer.Exit(1)
    console.print(f"[green]✓[/] {len(v.project.environments)} environments, {len(v.catalogs)} domains, "
                  f"{total} migrations: valid")


@app.command()
def plan(environment: str = typer.Option(..., "--environment", "-e"),
         domain: Optional[list[str]] = typer.Option(None, "--domain", "-d"),
         region: Optional[list[str]] = typer.Option(None, "--region", "-r"),
         target: Optional[str] = typer.Option(None, "--target", help="stop at this version"),
         out_of_order: bool = typer.Option(False, "--out-of-order"),
         specs: Path = SpecsArg,
         as_json: bool = typer.Option(False, "--json")) -> None:
    """What would run in ENVIRONMENT, per domain, region and technology, and what the DAG's plan task would refuse
    (dependencies, promotion). Broken domains are listed, not fatal."""
    _check_version("--target", target)
    v = validate_project(specs, domain)
    env = v.project.environments.get(environment)
    if env is None:
        _print_problems([p for p in v.project.problems if "environments" in p.file] or [],
                        f"environment '{environment}' is not usable; known: {sorted(v.project.environments)}")
        raise typer.Exit(2)
    plans, refused = [], {}
    for name in v.good_domains():
        d = v.project.domains[name]
        if env not in v.project.environments_of(d):
            continue
        p = plan_domain(v.project, d, v.catalogs[name], env, EnvironmentConnector().connect(env, d),
                        regions=region, target_version=target, out_of_order=out_of_order)
        plans.append(p)
        # the gates the DAG's plan task applies, said here rather than refused (nothing is recorded)
        run = open_run(specs, name, environment, params=RunParams(regions=region or None), who=Who.cli(),
                       connector=EnvironmentConnector(), audit=None)
        try:
            refused[p.domain] = plan_gates(run, p)
        finally:
            run.close()
    broken = {n: [str(p) for p in v.domain_problems(n)] for n in sorted(set(v.project.broken_domains) |
              {n for n, c in v.catalogs.items() if c.problems})}
    if as_json:
        print(json.dumps({"environment": environment, "plans": [{**p.to_dict(), "refused": refused.get(p.domain, [])}
                                                                for p in plans], "broken": broken}, indent=2))
    else:
        for p in plans:
            table = Table(title=f"{p.domain} @ {environment}  plan {p.hash[:12]}", title_justify="left")
            for col in ("region", "technology", "current", "pending", "next", "notes"):
                table.add_column(col)
            for t in p.targets:
                nxt = ", ".join(s.version or f"R:{s.description}" for s in t.steps[:4]) + (" …" if len(t.steps) > 4 else "")
                table.add_row(t.region, t.technology, t.current_version or "-", str(len(t.steps)), nxt,
                              "; ".join(t.problems + ([t.error] if t.error else [])))
            console.print(table)
            for why in refused.get(p.domain, []):
                err_console.print(f"[red]{p.domain}: its DAG's plan task would refuse this:[/] {escape(why)}",
                                  highlight=False, soft_wrap=True)
        if broken:
            for name, probs in broken.items():
                err_console.print(f"[red]domain '{name}' skipped:[/]", highlight=False)
                for pr in probs:
                    err_console.print(f"  {pr}", highlight=False)
    if broken or any(refused.values()):  # as the DAG's plan task would fail
        raise typer.Exit(1)


def ledger_table(title: str, infos) -> Table:
    """One target's migrations and their ledger state (``info`` and ``status``)."""
    table = Table(title=title, title_justify="left")
    for col in ("version", "description", "script", "state", "installed on", "ms"):
        table.add_column(col)
    for i in infos:
        e = i.entry
        table.add_row(i.version or "R", i.description, i.script, i.state.value,
                      e.installed_on.isoformat(timespec="seconds") if e and e.installed_on else "",
                      str(e.execution_time) if e else "")
    return table


@app.command()
def info(environment: str = typer.Option(..., "--environment", "-e"),
         domain: str = typer.Option(..., "--domain", "-d"),
         region: Optional[str] = typer.Option(None, "--region", "-r"),
         specs: Path = SpecsArg) -> None:
    """State of every migration (pending, success, changed, missing, …) per region and technology."""
    from polymigrate.commands.verbs import info as states

    v = validate_project(specs, [domain])
    if domain not in v.catalogs or v.catalogs[domain].problems:
        _print_problems(v.domain_problems(domain) or v.project.problems, f"domain '{domain}' is not usable:")
        raise typer.Exit(1)
    if environment not in v.project.environments:
        err_console.print(f"environment '{environment}' is not usable; known: {sorted(v.project.environments)}")
        raise typer.Exit(2)
    run = open_run(specs, domain, environment, params=RunParams(), who=Who.cli(), connector=EnvironmentConnector(),
                   audit=None)
    for r, tech, infos, read in states(run, region):
        console.print(ledger_table(f"{domain} · {r} · {tech}" + ("" if read else "  (ledger not read: no connection)"),
                                   infos))


@app.command("approve-status")
def approve_status(environment: str = typer.Option(..., "--environment", "-e"),
                   domain: str = typer.Option(..., "--domain", "-d"),
                   run_id: str = typer.Option(..., "--run-id", help="the DAG run whose approvals to read"),
                   override: bool = typer.Option(False, "--emergency-override", help="judge it as an override (the stricter bar)"),
                   specs: Path = SpecsArg, as_json: bool = typer.Option(False, "--json")) -> None:
    """Approvals on record in the audit store for a run and today's change set, judged by the policy now
    (expiry, roles, four-eyes, rejections): exit 0 when approved, 1 otherwise."""
    from dataclasses import replace

    from polymigrate.commands.approval import approval_status
    from polymigrate.commands.verbs import summarize

    try:
        run = open_run(specs, domain, environment, params=RunParams(override=override), who=Who.cli(),
                       connector=EnvironmentConnector(), audit=lambda: url_for(AUDIT_CONN_ID))
        run.who = replace(run.who, run_id=run_id)
        try:
            summary, _ = summarize(run)
            triggered = [r.event for r in getattr(run.sink, "query", lambda **kw: [])(run_id=run_id, kind="triggered")]
            if triggered:  # four-eyes compares approvers with the person who triggered that run
                d = triggered[0].details
                run.who = replace(run.who, triggered_by=str(d.get("by") or d.get("run_type") or triggered[0].actor))
            decision = approval_status(run, summary["changeset_hash"], summary)
        finally:
            run.close()
    except PolymigrateError as exc:
        err_console.print(f"[bold red]{domain} in {environment}:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps({"run_id": run_id, "changeset_hash": summary["changeset_hash"], **decision.to_dict()}, indent=2))
    else:
        console.print(f"{domain} in {environment}, run {run_id}, change set {summary['changeset_hash'][:12]}: "
                      f"[bold]{decision.status}[/] ({len(decision.approved_by)}/{decision.required}: "
                      f"{', '.join(decision.approved_by) or 'nobody yet'})", highlight=False, soft_wrap=True)
        for line in decision.reasons:
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        for line in decision.ignored:
            console.print(f"  not counted: {line}", style="dim", highlight=False, soft_wrap=True)
    if decision.status != "approved":
        raise typer.Exit(1)


_TEMPLATES = {key: t.template for key, t in TECHNOLOGIES.items()}


def _with_phase(technology: str, body: str, phase: str) -> str:
    """The template with its phase declared: a header line for SQL and Lua, a key for JSON."""
    if body.startswith("{"):
        return body.replace("{\n", f'{{\n  "phase": "{phase}",\n', 1)
    first, _, rest = body.partition("\n")
    if rest.startswith("-- polymigrate: "):  # one header line carries every option
        return f"{first}\n-- polymigrate: phase={phase}, " + rest[len("-- polymigrate: "):]
    return f"{first}\n-- polymigrate: phase={phase}\n{rest}"


@app.command()
def new(domain: str = typer.Argument(...), technology: str = typer.Argument(..., help="postgresql|mongodb|redis|elasticsearch"),
        description: str = typer.Argument(..., help="words, e.g. 'add orders index'"),
        repeatable: bool = typer.Option(False, "--repeatable", help="PostgreSQL R__ file"),
        undo: Optional[str] = typer.Option(None, "--undo", help="PostgreSQL U file for this version"),
        subdir: Optional[str] = typer.Option(None, "--dir", help="sub-folder, e.g. tables"),
        phase: Optional[str] = typer.Option(None, "--phase", help="release phase: expand|migrate|contract "
                                            "(default in a phased domain: the newest file's phase, docs/phases.md)"),
        specs: Path = SpecsArg) -> None:
    """Scaffold a correctly numbered migration file from a template."""
    v = validate_project(specs, [domain])
    if domain not in v.project.domains:
        _print_problems(v.domain_problems(domain) or v.project.problems, f"domain '{domain}' is not usable:")
        raise typer.Exit(1)
    d = v.project.domains[domain]
    if technology not in EXTENSIONS:
        err_console.print(f"unknown technology '{technology}'; one of {', '.join(EXTENSIONS)}")
        raise typer.Exit(2)
    if technology not in d.technologies:
        err_console.print(f"domain '{domain}' does not declare '{technology}'; add it under 'technologies:' in "
                          f"{Path(d.path) / 'domain.yaml'} first", highlight=False)
        raise typer.Exit(2)
    description = " ".join(description.split())  # one line: it lands in a header comment
    # only word characters reach the file name: a description can never leave the folder
    words = "_".join(re.findall(r"[a-z0-9]+", description.lower()))
    if not words:
        err_console.print("the description needs at least one letter or digit")
        raise typer.Exit(2)
    if subdir and (Path(subdir).is_absolute() or ".." in Path(subdir).parts):
        err_console.print(f"--dir must be a sub-folder inside {d.technology_dir(technology)}")
        raise typer.Exit(2)
    _check_version("--undo", undo)
    folder = d.technology_dir(technology) / (subdir or "")
    folder.mkdir(parents=True, exist_ok=True)
    if phase is not None and phase not in PHASES:
        err_console.print(f"--phase: unknown phase '{phase}'; one of {', '.join(PHASES)} (docs/phases.md)")
        raise typer.Exit(2)
    cat = discover_domain(d)
    version = undo or next_version(cat.versioned(technology))
    if phase is None and cat.phased and not undo and not repeatable and cat.versioned(technology):
        # the new file comes last: in the newest file's phase it validates (an expand file after a
        # contract one would run before it, phase-major, and is refused)
        phase = max((m.phase for m in cat.versioned(technology)), key=PHASES.index)
        if phase != "expand":
            console.print(f"phase {phase} (the newest {technology} file's; --phase to choose a later one)", highlight=False)
    if technology == "postgresql":
        name = f"R__{words}.sql" if repeatable else f"{'U' if undo else 'V'}{version}__{words}.sql"
    else:
        ext = EXTENSIONS[technology][0]
        name = f"{version}-{words.replace('_', '-')}{ext}"
    path = folder / name
    if path.exists():
        err_console.print(f"{path} already exists")
        raise typer.Exit(1)
    # JSON templates get the description JSON-escaped, so quotes in it keep the file valid
    text = json.dumps(description)[1:-1] if TECHNOLOGIES[technology].format_model else description
    body = _TEMPLATES[technology].format(description=text)
    if phase and not undo:
        body = _with_phase(technology, body, phase)
    path.write_text(body, encoding="utf-8")
    console.print(f"[green]created[/] {path}")
    declared = (d.declared_phases() or {}).get(technology) or (["expand"] if d.declared_phases() else [])
    if phase and not undo and phase not in declared:
        # the DAG's tasks follow domain.yaml's phases: validate refuses the file until they list it
        want = [p for p in PHASES if p in declared or p == phase]
        console.print(f"declare the phase in {Path(d.path) / 'domain.yaml'}: technologies.{technology}.phases: "
                      f"\\[{', '.join(want)}] (docs/phases.md)", highlight=False)
