"""What the PostgreSQL adapter reads back of a database: its snapshot (drift), how the workload used
indexes about to be dropped, the verify step's checks and the expectation suites."""

from __future__ import annotations

from typing import Any

from polymigrate.adapters.base import Check
from polymigrate.adapters.postgresql.snapshot import snapshot as take_snapshot
from polymigrate.catalog import Migration
from polymigrate.errors import PermanentError
from polymigrate.ledger import RunContext


class PostgresChecks:
    """Part of ``PostgresAdapter``: what it reads back of the database (snapshot, index use, checks,
    expectations)."""

    def snapshot(self) -> dict[str, Any]:
        conn = self._ensure_ledger()
        schema = self.schema or conn.execute("SELECT current_schema()").fetchone()[0]
        skip = [self.ledger.table, self.ledger.table + "_lock"] if schema == self.ledger.schema else []
        return take_snapshot(conn, schema, skip)

    def index_baseline(self, dropped: list[str]) -> dict[str, Any] | None:
        """How the workload used the indexes ``dropped`` names, read before they are dropped (polymigrate.impact)."""
        from polymigrate.impact import pg_baseline

        conn = self._ensure_ledger()
        schema = self.schema or conn.execute("SELECT current_schema()").fetchone()[0]
        return pg_baseline(conn, schema, dropped)

    def health_checks(self, ctx: RunContext, migrations: list[Migration]) -> list[Check]:
        """No INVALID index in the schema, and no constraint left ``NOT VALID`` unless the domain's
        ``allow_not_valid`` names it (``table.constraint`` patterns: a constraint validated by a later
        release on purpose)."""
        from fnmatch import fnmatchcase

        from polymigrate.adapters.postgresql.snapshot import invalid_indexes, not_valid_constraints

        conn = self._ensure_ledger()
        schema = self.schema or conn.execute("SELECT current_schema()").fetchone()[0]
        bad = invalid_indexes(conn, schema)
        checks = [Check("invalid indexes", not bad, technology=self.technology, detail=(
            f"{len(bad)} INVALID index(es) in schema {schema}: " + ", ".join(f"{i} on {t}" for i, t in bad)
            + " (an interrupted CREATE INDEX CONCURRENTLY: DROP INDEX CONCURRENTLY it and create it again)"
            if bad else f"none in schema {schema}"))]
        allowed = list(getattr(self.settings, "allow_not_valid", None) or [])
        found = not_valid_constraints(conn, schema)
        left = [(t, c) for t, c, _ in found if not any(fnmatchcase(f"{t}.{c}", p) or fnmatchcase(c, p) for p in allowed)]
        declared = len(found) - len(left)
        checks.append(Check("NOT VALID constraints", not left, technology=self.technology, detail=(
            f"{len(left)} constraint(s) in schema {schema} still NOT VALID: " + ", ".join(f"{t}.{c}" for t, c in left)
            + " (ALTER TABLE … VALIDATE CONSTRAINT in a migration, or list them under allow_not_valid in domain.yaml)"
            if left else f"none left in schema {schema}" + (f" ({declared} declared in allow_not_valid)" if declared else ""))))
        return checks

    def sqlalchemy_url(self) -> Any:
        """This target as a SQLAlchemy ``URL`` (psycopg 3 driver), for libraries that take one (GX)."""
        from sqlalchemy.engine import URL

        k = {key: v for key, v in self._given().items() if v not in (None, "")}
        # a Unix socket's folder (pgserver, a local server) is no URL host: libpq takes it, and the port
        # naming its socket file, as query parameters
        socket = str(k.get("host", "")).startswith("/")
        moved = ("user", "password", "dbname") if socket else ("host", "port", "user", "password", "dbname")
        query = {key: str(v) for key, v in k.items() if key not in moved}
        return URL.create("postgresql+psycopg", username=k.get("user"), password=k.get("password"),
                          host=None if socket else k.get("host"),
                          port=int(k["port"]) if k.get("port") and not socket else None,
                          database=k.get("dbname"), query=query)

    def run_expectations(self, suites: list[Any]) -> list[Check]:
        """The suites through GX Core's SQL datasource; unqualified tables are in the domain's schema."""
        from polymigrate.expectations_gx import run_sql_suites

        if not suites:
            return []
        url = self.sqlalchemy_url()
        try:
            outcomes = run_sql_suites(suites, url, self.schema)
        except Exception as exc:  # noqa: BLE001  GX wraps driver errors in its own: say which target
            message = (str(exc).splitlines() or [type(exc).__name__])[0]
            if url.password:  # GX and SQLAlchemy may quote the connection string in their errors
                message = message.replace(str(url.password), "***")
            raise PermanentError(f"{self.target}: the expectation suites could not run: {message[:300]}",
                                 hint="check each suite's object (table and schema) and arguments") from None
        return self._expectation_checks(outcomes)
