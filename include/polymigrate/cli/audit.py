"""CLI verbs: ``polymigrate audit init | verify | report`` over the audit store."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer

from polymigrate.cli.app import app, console, err_console

audit_app = typer.Typer(help="The audit trail: create the store, check it is untampered, export reports.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")

UrlOpt = typer.Option(None, "--url", help="audit database URL; default: the AIRFLOW_CONN_POLYMIGRATE_AUDIT variable")


def _store(url: str | None, *, read_only: bool = False):
    from polymigrate.audit import AUDIT_CONN_ID, PostgresAuditStore
    from polymigrate.connections import env_var, url_for

    url = url or url_for(AUDIT_CONN_ID)
    if not url:
        err_console.print(f"no audit store given: pass --url postgresql://… or set {env_var(AUDIT_CONN_ID)}",
                          highlight=False)
        raise typer.Exit(2)
    # verify and report only read: through the reader role when the login has it (docs/audit.md)
    return PostgresAuditStore(url, read_only=read_only)


def _fail(store, exc: Exception) -> None:
    import psycopg

    from polymigrate.audit.store import READER_ROLE

    err_console.print(f"[red]cannot read the audit store {store.target}:[/] {exc}", highlight=False)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        err_console.print(f"fix: the login needs the reader role: GRANT {READER_ROLE} TO <login>, or "
                          f"'polymigrate audit init --grant-read-to <login>' as the schema owner", highlight=False)
    raise typer.Exit(2)


def _when(value: str | None, option: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        err_console.print(f"{option} {value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]")
        raise typer.Exit(2)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@audit_app.command("init")
def init(url: Optional[str] = UrlOpt,
         grant_to: Optional[str] = typer.Option(None, "--grant-to", help="login role to make a member of the writer role"),
         grant_read_to: Optional[str] = typer.Option(None, "--grant-read-to",
                                                     help="login role to make a member of the reader role (reports, compliance)")) -> None:
    """Create the audit schema, append-only triggers, writer and reader roles (idempotent)."""
    store = _store(url)
    try:
        result = store.ensure_schema(grant_to=grant_to, grant_read_to=grant_read_to)
    except Exception as exc:  # psycopg errors carry the server's reason
        _fail(store, exc)
    finally:
        store.close()
    console.print(f"[green]✓[/] audit store ready at {store.target}"
                  + (f"; writer role {result.writer_role}" if result.writer_role else ""), highlight=False)
    if result.note:
        err_console.print(f"[yellow]note:[/] {result.note}", highlight=False)


@audit_app.command("verify")
def verify(url: Optional[str] = UrlOpt) -> None:
    """Walk the hash chain; exit 1 naming the first broken row if anything was edited or removed."""
    store = _store(url, read_only=True)
    try:
        result = store.verify()
    except Exception as exc:
        _fail(store, exc)
    finally:
        store.close()
    if result.ok:
        console.print(f"[green]✓[/] {result}", highlight=False)
        console.print("  keep the head hash with your audit records: a later verify must extend it", style="dim")
        return
    err_console.print(f"[bold red]✗ audit trail tampered with:[/] {result}", highlight=False)
    raise typer.Exit(1)


@audit_app.command("report")
def report(from_: Optional[str] = typer.Option(None, "--from", help="start (inclusive), e.g. 2026-11-01; default 30 days ago"),
           to: Optional[str] = typer.Option(None, "--to", help="end (exclusive); a bare date means the end of that day"),
           domain: Optional[str] = typer.Option(None, "--domain", "-d"),
           environment: Optional[str] = typer.Option(None, "--environment", "-e"),
           region: Optional[str] = typer.Option(None, "--region", "-r"),
           fmt: str = typer.Option("html", "--format", "-f", help="csv | json | html"),
           output: Optional[Path] = typer.Option(None, "--output", "-o", help="file to write; default stdout"),
           url: Optional[str] = UrlOpt) -> None:
    """Who changed what, where, when, approved by whom: as CSV, JSON or a readable HTML page."""
    from polymigrate.audit.report import FORMATS, render, select

    if fmt not in FORMATS:
        err_console.print(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    start = _when(from_, "--from") or datetime.now(timezone.utc) - timedelta(days=30)
    end = _when(to, "--to")
    if end is not None and to and len(to) == 10:  # '--to 2026-11-30' includes the 30th
        end += timedelta(days=1)
    store = _store(url, read_only=True)
    try:
        records, runs = select(store, from_=start, to=end, domain=domain, environment=environment, region=region)
    except Exception as exc:
        _fail(store, exc)
    finally:
        store.close()
    filters = {"from": start.isoformat(timespec="minutes"), "to": end.isoformat(timespec="minutes") if end else None, "domain": domain,
               "environment": environment, "region": region}
    text = render(records, fmt, filters=filters, runs=runs)
    if output:
        output.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {output} ({len(records)} events)", highlight=False)
    else:
        print(text, end="")
