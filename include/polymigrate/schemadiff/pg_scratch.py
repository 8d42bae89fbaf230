"""Scratch databases and the states ``polymigrate diff`` compares (PostgreSQL).

A state is a live database, or a folder applied to a scratch database made on the scratch server and
dropped after: a migrations folder through the project's own PostgreSQL adapter, a declarative
``schema/`` folder of plain DDL files in name order. ``schemadiff.postgresql`` diffs and lays out
what two states differ by.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from polymigrate.errors import Problem, SpecError

SCRATCH_ENV = "POLYMIGRATE_SCRATCH_PG"  # the server scratch databases are made on (an admin URL)
# every generated file waits this long at most for its locks, then fails as transient and is retried,
# rather than queueing the application's queries behind it
LEDGER_SCHEMA = "polymigrate"  # the adapter's ledger and lock live here: never part of a diff
_V_FILE = re.compile(r"^V[0-9][0-9._]*__.+\.sql$", re.IGNORECASE)


def _error(message: str, *, hint: str | None = None) -> SpecError:
    """Bad input, as every other verb reports it: where (the text before the first ': '), what, the fix."""
    where, sep, what = message.partition(": ")
    return SpecError([Problem(where, what, hint=hint) if sep else Problem("polymigrate diff", message, hint=hint)])


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def _db_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/") or "postgres"


class Scratch:
    """Scratch databases on one server, every one dropped on ``close`` (``with Scratch(url) as s``)."""

    def __init__(self, admin_url: str):
        self.admin_url = admin_url
        self.created: list[str] = []

    def create(self, template: str | None = None) -> str:
        """A new empty database (or a copy of ``template``, a database of this server nobody is connected to)."""
        import psycopg
        from psycopg import sql

        name = f"pm_diff_{uuid.uuid4().hex[:12]}"
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                   sql.Identifier(_db_of(template)))
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(stmt)
        self.created.append(name)
        return _with_db(self.admin_url, name)

    def close(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in reversed(self.created):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.created.clear()

    def __enter__(self) -> "Scratch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def scratch_server(current: str | Path, given: str | None = None) -> str:
    """Where scratch databases go: ``given``, else $POLYMIGRATE_SCRATCH_PG, else the server of the
    current URL (its ``postgres`` database), else the test server that ``make engines`` started."""
    if given:
        return given
    if os.environ.get(SCRATCH_ENV):
        return os.environ[SCRATCH_ENV]
    if isinstance(current, str) and "://" in current:
        return _with_db(current, "postgres")
    if os.environ.get("POLYMIGRATE_TEST_PG"):
        return os.environ["POLYMIGRATE_TEST_PG"]
    engines = Path(".engines/env")  # where `make engines` says its PostgreSQL answers, as the tests read it
    if engines.is_file():
        m = re.search(r'POLYMIGRATE_TEST_PG="\$\{POLYMIGRATE_TEST_PG:-([^}"]+)\}"', engines.read_text())
        if m:
            return m.group(1)
    raise _error(f"no server for scratch databases: {current} is a folder",
                    hint=f"pass --scratch postgresql://user@host/postgres or set {SCRATCH_ENV}")


# -- loading a state ---------------------------------------------------------------------------------

def is_url(source: str | Path) -> bool:
    return isinstance(source, str) and "://" in source


def migrations_folder(folder: Path) -> bool:
    """A Flyway-style folder (V…__….sql files anywhere under it), not a declarative one."""
    return any(_V_FILE.match(p.name) for p in folder.rglob("*.sql"))


def apply_migrations(url: str, folder: Path, *, domain: str = "diff", schema: str | None = None,
                     upto: int | None = None, placeholders: dict[str, str] | None = None) -> int:
    """Apply the folder's versioned (and repeatable) files with the project's PostgreSQL adapter, as a
    real run would (placeholders, transactions, non-transactional files); ``upto``: the first n
    versioned files only. Returns how many files ran."""
    from polymigrate.adapters import adapter_class
    from polymigrate.catalog import Kind, applicable
    from polymigrate.commands.adhoc import discover_locations
    from polymigrate.executor import migrate
    from polymigrate.ledger import RunContext
    from polymigrate.spec import TechnologyConfig

    found, problems = discover_locations(domain, "postgresql", [folder])
    if problems:
        raise _error(f"{folder}: {problems[0]}", hint="fix the migration folder first (polymigrate validate)")
    ms = applicable(found)
    if upto is not None:
        versioned = [m for m in ms if m.kind is Kind.VERSIONED][:upto]
        ms = versioned
    adapter = adapter_class("postgresql").from_url(url, domain=domain, settings=TechnologyConfig(schema=schema))
    try:
        ctx = RunContext(domain=domain, environment="scratch", actor="polymigrate diff", run_id=uuid.uuid4().hex,
                         lock_wait_seconds=30.0, placeholders=dict(placeholders or {}))
        result = migrate(adapter, ms, ctx)
    finally:
        adapter.close()
    return len(result.applied)


def apply_ddl_folder(url: str, folder: Path, *, schema: str | None = None) -> int:
    """A declarative folder: every .sql file in path order, each in one transaction."""
    import psycopg
    from psycopg import sql

    files = sorted(p for p in folder.rglob("*.sql") if p.is_file())
    if not files:
        raise _error(f"{folder}: no .sql files", hint="put the desired DDL (CREATE TABLE …) in .sql files there")
    with psycopg.connect(url) as conn:
        if schema:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for path in files:
            try:
                conn.execute(path.read_text(encoding="utf-8"))  # no parameters: sent as a simple query
            except psycopg.Error as exc:
                raise _error(f"{path}: {exc.diag.message_primary or exc}",
                                hint="the declarative schema must be plain DDL PostgreSQL accepts") from None
    return len(files)


def apply_sql(url: str, text: str) -> None:
    """One generated file, statement by statement in autocommit (its CONCURRENTLY statements too)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for stmt in split(text):
            conn.execute(stmt)


def split(text: str) -> list[str]:
    from pglast import split as pg_split

    return [s for s in pg_split(text, with_parser=True) if s.strip()]


def load_state(source: str | Path, scratch: Scratch, *, domain: str = "diff", schema: str | None = None,
               placeholders: dict[str, str] | None = None) -> str:
    """The URL of a database holding ``source``: itself when a URL, else a scratch database."""
    if is_url(source):
        return str(source)
    folder = Path(source)
    if (folder / "domain.yaml").is_file():  # a domain's folder: its declared state, as for the other technologies
        folder = folder / "postgresql" / "schema"
    if not folder.is_dir():
        raise _error(f"{folder}: not a folder nor a postgresql:// URL",
                        hint="give a target URL, a domain's migrations folder or a declarative schema/ folder")
    url = scratch.create()
    if migrations_folder(folder):
        apply_migrations(url, folder, domain=domain, schema=schema, placeholders=placeholders)
    else:
        apply_ddl_folder(url, folder, schema=schema)
    return url


# -- the diff ----------------------------------------------------------------------------------------

def diff_statements(from_url: str, to_url: str) -> list[str]:
    """Statements that make ``from_url``'s schema ``to_url``'s, in results' dependency order."""
    import psycopg
    from results.dbdiff import Migration

    with psycopg.connect(from_url) as a, psycopg.connect(to_url) as b:
        m = Migration(a.cursor(), b.cursor(), exclude_schema=LEDGER_SCHEMA)
        m.set_safety(False)  # drops are wanted; they are flagged by lint and split into contract
        m.add_all_changes_ordered()
        return [s.strip() for s in m.statements if s and s.strip()]


def catalog(url: str) -> dict:
    """Tables (columns), indexes and constraints of every user schema: what convergence is judged on."""
    import psycopg

    from polymigrate.adapters.postgresql.snapshot import snapshot

    with psycopg.connect(url) as conn:
        schemas = [r[0] for r in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' "
            "AND nspname NOT IN ('information_schema', %s) ORDER BY 1", (LEDGER_SCHEMA,)).fetchall()]
        out = {}
        for s in schemas:
            snap = snapshot(conn, s, [])
            snap.pop("schema")
            out[s] = snap
        return out
