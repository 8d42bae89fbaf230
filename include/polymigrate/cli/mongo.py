"""CLI verb: ``polymigrate migrate-mongo-import`` — adopt a migrate-mongo project.

Copies migrate-mongo's changelog collection into the MongoDB ledger, so nothing migrate-mongo
applied runs again (as ``flyway-import`` does for Flyway). Targets as for every verb: ad hoc
``--url mongodb://host/DB --locations DIR``, or ``-e ENV -d DOMAIN``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from polymigrate.adapters.base import Adapter
from polymigrate.cli.app import console, err_console
from polymigrate.cli.migrate import (DomainOpt, EnvOpt, LocOpt, OverrideOpt, ReasonOpt, RegionOpt, Selection, SkipOpt,
                                     SpecsOpt, TableOpt, UrlOpt, WaitOpt, _maintain, _no_skip, app)
from polymigrate.commands import verbs


@app.command("migrate-mongo-import")
def migrate_mongo_import(collection: str = typer.Option("changelog", "--collection",
                                                        help="migrate-mongo's changelogCollectionName"),
                         environment: Optional[str] = EnvOpt, domain: Optional[str] = DomainOpt,
                         region: Optional[list[str]] = RegionOpt, specs: Path = SpecsOpt, url: Optional[str] = UrlOpt,
                         locations: Optional[list[Path]] = LocOpt, table: Optional[str] = TableOpt,
                         lock_wait: Optional[float] = WaitOpt, emergency_override: bool = OverrideOpt,
                         reason: Optional[str] = ReasonOpt, skip_approval: bool = SkipOpt) -> None:
    """Import migrate-mongo's changelog into the ledger: what migrate-mongo applied is never run again."""
    _no_skip(skip_approval)
    sel = Selection(environment, domain, region, "mongodb", specs, url, locations, None, None, table, lock_wait,
                    emergency_override, reason)

    def act(label: str, adapter: Adapter, ctx, sink, migrations) -> None:
        report = verbs.adopt(adapter, migrations, ctx, tool="migrate-mongo", source=collection, sink=sink)
        console.print(f"[green]✓[/] {label}: imported {report.imported} applied migration(s) from "
                      f"{collection}" + (f", {len(report.already)} already in the ledger" if report.already else ""),
                      highlight=False)
        for name in report.changed:
            err_console.print(f"  [yellow]changed[/] {name}: migrate-mongo applied other contents (fileHash); the "
                              "next run stops until you restore the file or run `polymigrate repair`", highlight=False)
        for name in report.missing:
            err_console.print(f"  [yellow]missing[/] {name}: in the changelog, no such file in the locations; "
                              "restore it or run `polymigrate repair`", highlight=False)

    _maintain(sel, "migrate-mongo-import", act, with_files=True)
