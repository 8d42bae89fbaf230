"""CLI verb: ``polymigrate lint`` — the validate stage's lint, with exit code 1 on blocking findings."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from polymigrate.cli.app import DEFAULT_SPECS, app, console, err_console
from polymigrate.commands import validate_project
from polymigrate.connections import redact, technology_of
from polymigrate.executor import placeholders_for
from polymigrate.ledger import RunContext
from polymigrate.spec.models import SEVERITY_ORDER

if TYPE_CHECKING:
    from polymigrate.lint import LintReport

_STYLE = {"info": "dim", "low": "cyan", "medium": "yellow", "high": "red", "critical": "bold red"}


def _connect(url: str):
    tech = technology_of(url)  # every scheme the descriptors name (mongo:// and opensearch:// too)
    if tech == "elasticsearch":
        from polymigrate.adapters.elasticsearch.api import SearchApi, SearchError
        try:
            return SearchApi.from_url(url)
        except SearchError as exc:
            err_console.print(f"cannot connect to {redact(url)}: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
    if tech == "mongodb":
        import pymongo

        from polymigrate.adapters.mongodb.adapter import MongoAdapter

        client = MongoAdapter.from_url(url, domain="lint").client  # Airflow's mongo:// and ?srv= as a run reads them
        try:
            client.admin.command("ping")
        except pymongo.errors.PyMongoError as exc:
            err_console.print(f"cannot connect to {redact(url)}: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2)
        return client  # lint only reads collection statistics
    if tech != "postgresql":
        err_console.print(f"--url {redact(url)}: lint reads statistics from PostgreSQL, MongoDB or Elasticsearch "
                          "only (Redis files are linted without a server); drop --url", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    import psycopg

    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        err_console.print(f"cannot connect to {redact(url)}: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    conn.read_only = True  # lint only reads statistics
    return conn


def _print_rules() -> None:
    from polymigrate.lint import RULES

    table = Table(title="lint rules", title_justify="left")
    for col in ("rule", "technology", "severity", "what"):
        table.add_column(col)
    for r in RULES:
        table.add_row(r.name, r.technology, r.severity, r.summary)
    console.print(table)


def _print_report(domain: str, report: LintReport, threshold: str) -> None:
    console.print(f"[bold]{domain}[/]: {report.files} files, risk [bold]{report.risk}[/]"
                  f"{', destructive' if report.destructive else ''}"
                  f"{'' if report.connected else ' (no connection: risk from statements alone)'}", highlight=False, soft_wrap=True)
    blocking = {id(f) for f in report.blocking(threshold)}
    for f in report.findings:
        where = f.file if f.line is None else f"{f.file}:{f.line}"
        mark = "✗" if id(f) in blocking else "~" if f.suppressed else "·"
        style = "dim" if f.suppressed else _STYLE.get(f.severity, "")
        console.print(f"  {mark} [{style}]{f.severity:8}[/] {where}: [bold]{f.rule}[/] {f.message}", highlight=False, soft_wrap=True)
        if f.suppressed:
            console.print(f"      suppressed: {f.suppression_reason}", style="dim", highlight=False, soft_wrap=True)
        elif f.fix:
            console.print(f"      fix: {f.fix}", style="dim", highlight=False, soft_wrap=True)
    for i in report.impacts:
        if i.seconds:
            console.print(f"  ⏱ {i.file}:{i.line} {i.table}: {i.note} → {i.risk}", style="dim", highlight=False, soft_wrap=True)


def _placeholders(project, environment: str | None, region: str | None, items: list[str] | None):
    """domain -> the ${placeholder} values a run in ``environment``/``region`` would use, as migrate does;
    without them a ``${schema}.table`` cannot be found on the target and scores unknown."""
    extra = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err_console.print(f"--placeholder {item!r}: expected key=value")
            raise typer.Exit(2)
        extra[key] = value
    env = None
    if environment:
        env = project.environments.get(environment)
        if env is None:
            err_console.print(f"unknown environment '{environment}'; known: {sorted(project.environments)}")
            raise typer.Exit(2)
        if region and region not in env.regions:
            err_console.print(f"unknown region '{region}'; {environment} has {sorted(env.regions)}")
            raise typer.Exit(2)
        if region is None and len(env.regions) == 1:
            region = next(iter(env.regions))
    values = {**(env.placeholders if env else {}), **(env.regions[region].placeholders if env and region else {}),
              **extra}
    return lambda name: placeholders_for(RunContext(domain=name, environment=environment or "adhoc",
                                                    region=region or "default", placeholders=values))


@app.command()
def lint(specs: Path = typer.Argument(Path(DEFAULT_SPECS), help="spec folder"),
         domain: Optional[list[str]] = typer.Option(None, "--domain", "-d", help="only these domains"),
         as_json: bool = typer.Option(False, "--json", help="machine-readable report"),
         url: Optional[str] = typer.Option(None, "--url", help="postgresql://…, mongodb://… or http(s)://… "
                                                               "(Elasticsearch/OpenSearch) target for impact-aware risk (read only)"),
         environment: Optional[str] = typer.Option(None, "--environment", "-e",
                                                   help="fill ${placeholders} from this environment (the --url target's)"),
         region: Optional[str] = typer.Option(None, "--region", "-r", help="… and this region's placeholders"),
         placeholder: Optional[list[str]] = typer.Option(None, "--placeholder", "-p", help="${key} value, as key=value"),
         threshold: str = typer.Option("high", "--threshold", "-t", help="lowest severity that fails: " + "|".join(SEVERITY_ORDER)),
         rules: bool = typer.Option(False, "--rules", help="list the rules and exit")) -> None:
    """Lint every migration: SQL safety, non-SQL rules, security, version collisions. Exit 1 on blocking findings."""
    if rules:
        _print_rules()
        return
    if threshold not in SEVERITY_ORDER:
        err_console.print(f"--threshold {threshold!r}: use one of {', '.join(SEVERITY_ORDER)}")
        raise typer.Exit(2)
    # pglast and the rules: imported by the verb that lints, not by every `polymigrate` command
    from polymigrate.governance.labels import LabelIndex
    from polymigrate.lint import lint_catalog

    v = validate_project(specs, domain)
    values_of = _placeholders(v.project, environment, region, placeholder)
    conn = _connect(url) if url else None
    try:
        reports = {}
        mongo_client = conn if conn is not None and hasattr(conn, "list_database_names") else None
        for name, catalog in v.catalogs.items():
            pg = v.project.domains[name].technologies.get("postgresql")
            mongo_cfg = v.project.domains[name].technologies.get("mongodb")
            mongo = None
            if mongo_client is not None and mongo_cfg is not None:
                # the domain's own database, else the one the URL names
                dbname = mongo_cfg.database or (mongo_client.get_default_database().name if urlsplit(url or "").path.strip("/") else None)
                mongo = mongo_client[dbname] if dbname else None
            search = conn if type(conn).__name__ == "SearchApi" else None
            reports[name] = lint_catalog(catalog, connection=None if (search or mongo_client is not None) else conn,
                                         search=search, schema=pg.schema_ if pg else None, mongo=mongo,
                                         placeholders=values_of(name),
                                         labels=LabelIndex.of(v.project.domains[name].labels))
    finally:
        if conn is not None:
            conn.close()
    problems = v.problems
    blocking = sum(len(r.blocking(threshold)) for r in reports.values())
    if as_json:
        print(json.dumps({"threshold": threshold, "blocking": blocking,
                          "problems": [str(p) for p in problems],
                          "domains": {n: r.to_dict() for n, r in reports.items()}}, indent=2, default=str))
    else:
        for name, report in reports.items():
            _print_report(name, report, threshold)
        for p in problems:
            err_console.print(f"  [red]✗[/] spec problem: {p}", highlight=False, soft_wrap=True)
        verdict = "[red]blocked[/]" if blocking or problems else "[green]passes[/]"
        console.print(f"{blocking} finding(s) at or above '{threshold}': {verdict}")
    if blocking or problems:
        raise typer.Exit(1)
