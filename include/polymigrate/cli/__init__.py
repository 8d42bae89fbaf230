"""``polymigrate`` command line. Each module registers its verbs on the shared app."""

from polymigrate.cli.app import app
from polymigrate.cli import core  # noqa: F401  validate, info, plan, new
from polymigrate.cli import migrate  # noqa: F401  migrate, undo, baseline, repair (PostgreSQL issue)
from polymigrate.cli import lint  # noqa: F401  lint (validation issue)
from polymigrate.cli import audit  # noqa: F401  audit verify/report (audit issue)
from polymigrate.cli import mongo  # noqa: F401  migrate-mongo-import (MongoDB issue)
from polymigrate.cli import diff  # noqa: F401  diff, undo-gen (issue 26)


def main() -> None:
    app()


__all__ = ["app", "main"]
