"""The typer application every CLI module registers its commands on."""

import typer
from rich.console import Console

app = typer.Typer(
    name="polymigrate",
    help="Database migrations for many domains, technologies, environments and regions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

DEFAULT_SPECS = "migration_specs"
