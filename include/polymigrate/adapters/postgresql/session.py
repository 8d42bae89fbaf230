"""The PostgreSQL adapter's session: the connection it opens from the connection info it was given
(credentials kept out of messages), the per-file settings, and the reset that keeps what a file changed
in its session from reaching the next file."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from polymigrate.adapters.postgresql.errors import connect_error
from polymigrate.adapters.postgresql.lock import _FENCE
from polymigrate.catalog import Migration
from polymigrate.errors import PermanentError
from polymigrate.ledger import RunContext

# Lets the server abort a statement soon after our process dies (PostgreSQL >= 14), so a killed
# CREATE INDEX CONCURRENTLY leaves an INVALID index to repair instead of a build still running.
_CLIENT_CHECK = "1s"
# What a file may leave in its session (Flyway restores role and search_path; this restores all of it).
# Every one of these may run inside a transaction, so a transactional file resets before its ledger row.
# RESET ALL leaves the role alone; SET SESSION AUTHORIZATION DEFAULT resets it (any user may run it).
_RESET = ("RESET ALL", "SET SESSION AUTHORIZATION DEFAULT", "CLOSE ALL", "UNLISTEN *",
          "DISCARD TEMP", "DISCARD SEQUENCES", "DEALLOCATE ALL")
# Ledger writes inside a step of a non-transactional file run as the connecting user, whatever role the file set.
_AS_CONNECTED = "SET LOCAL SESSION AUTHORIZATION DEFAULT"
_RESET_BYTES = tuple(x.encode() for x in _RESET)  # bytes: psycopg skips converting them, 500 files a run


class PostgresSession:
    """Part of ``PostgresAdapter``: its one session, opened lazily from the connection info, the settings a
    file runs with (lock and statement timeouts, search_path) and the reset after it."""

    def _given(self) -> dict[str, Any]:
        return {**conninfo_to_dict(self._conninfo), **self._kwargs}

    @property
    def target(self) -> str:
        """``postgresql://user@host:port/dbname``: never the password, whatever form the client had."""
        try:
            k = self._given()
        except psycopg.ProgrammingError:
            return "postgresql://(invalid connection string)"
        user = f"{k['user']}@" if k.get("user") else ""
        return f"postgresql://{user}{k.get('host', '')}{':' + str(k['port']) if k.get('port') else ''}/{k.get('dbname', '')}"

    def _secrets(self) -> tuple[str, ...]:
        try:
            password = self._given().get("password")
        except psycopg.ProgrammingError:
            return ()
        return (str(password),) if password else ()

    def _open(self, purpose: str) -> psycopg.Connection:
        try:
            given = self._given()
        except psycopg.ProgrammingError as exc:
            raise PermanentError(f"invalid PostgreSQL connection string: {exc}",
                                 hint="use postgresql://user@host:port/dbname") from None
        name = f"polymigrate {purpose} {self.domain}"[:63]
        kwargs = {"connect_timeout": 10, **given, "autocommit": True, "application_name": name}
        try:
            conn = psycopg.connect(**kwargs)
            # No server-side prepared statements: psycopg forgets them (DEALLOCATE ALL) when it sees a
            # DROP or ROLLBACK result, and in pipeline mode that can land between a Parse and its
            # Execute queued for the next file ("prepared statement _pg3_N does not exist").
            conn.prepare_threshold = None
        except psycopg.Error as exc:
            raise connect_error(exc, self.target, self._secrets()) from None
        self._session = {"application_name": name}
        if conn.info.server_version >= 140000:
            try:
                conn.execute("SELECT set_config('client_connection_check_interval', %s, false)", (_CLIENT_CHECK,))
                self._session["client_connection_check_interval"] = _CLIENT_CHECK
            except psycopg.Error:
                pass  # not allowed for this role: a killed run may then need lock_timeout to pass
        return conn

    @property
    def conn(self) -> psycopg.Connection:
        """The session, reopened when a previous error closed it, unless it held the lock: a new session
        does not hold it, and another run may have taken it (and applied files) in between."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._locked:
                raise self._lost_lock("its session ended")
            self._conn = self._open("apply")
            self._schema_ready = False
        return self._conn

    @property
    def server_version(self) -> int:
        return self.conn.info.server_version

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None
        self._locked = False

    def _settings_for(self, migration: Migration, ctx: RunContext) -> dict[str, str]:
        d = migration.directives
        values = {"lock_timeout": d.lock_timeout or ctx.lock_timeout,
                  "statement_timeout": d.statement_timeout or ctx.statement_timeout}
        out = {k: v.replace(" ", "") for k, v in values.items() if v}
        if self.schema:
            conn = self.conn
            if not self._schema_ready:
                exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone()
                if not exists:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
                self._schema_ready = True
            out["search_path"] = sql.Identifier(self.schema).as_string(conn)
        return out

    @staticmethod
    def _set(conn: psycopg.Connection, settings: dict[str, str], *, local: bool) -> None:
        if settings:
            conn.execute(sql.SQL("SELECT {}").format(sql.SQL(", ").join(
                sql.SQL("set_config({}, {}, {})").format(sql.Literal(k), sql.Placeholder(), sql.Literal(local))
                for k in settings)), list(settings.values()))

    def _reset_quietly(self, conn: psycopg.Connection) -> None:
        """After a file run outside one transaction (statements, backfills): the reset in one round trip.
        A session that broke is closed by its owner, and a failing reset must not hide the file's error."""
        if conn.broken or conn.closed:
            return
        try:
            conn.execute(sql.SQL("; ").join(sql.SQL(x) for x in _RESET))
            self._set(conn, self._session, local=False)
        except psycopg.Error:
            pass

    def _reset_and_fence(self, conn: psycopg.Connection, reset: bool) -> None:
        """In a file's transaction, before its ledger row: the session given back as it was opened (see the
        module docstring) when the file may have changed it, then the lock's fence; works in a pipeline,
        one statement per execute. The session's own settings and the fence share one SELECT (issue 24:
        each statement of a file's pipeline costs the client as much as the server)."""
        settings = self._session if reset else {}
        if reset:
            for statement in _RESET_BYTES:
                conn.execute(statement)
        self._set_cached(conn, settings, local=False, fence=True)

    def _set_cached(self, conn: psycopg.Connection, settings: dict[str, str], *, local: bool,
                    fence: bool = False) -> None:
        """``_set`` (plus the fence, when asked) with the SELECT composed once per run, not once per file."""
        key = (tuple(settings), local, fence, conn.info.encoding)
        query = self._queries.get(key)
        if query is None:
            parts = [sql.SQL("set_config({}, %s, {})").format(sql.Literal(k), sql.Literal(local)) for k in settings]
            if fence:
                parts.append(_FENCE.format(key=sql.Literal(self._key)))
            query = self._queries[key] = sql.SQL("SELECT {}").format(sql.SQL(", ").join(parts)).as_bytes(conn) \
                if parts else b""
        if query:
            conn.execute(query, list(settings.values()))

    def _as_connected(self, conn: psycopg.Connection) -> None:
        conn.execute(_AS_CONNECTED)
        self._fence(conn)
