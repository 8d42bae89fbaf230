"""Airflow connection → adapter client, through the provider hooks, at execute time only.

Hooks own connections (as in Airflow's provider packages); this module only picks the fields an
adapter needs. Extras are allowlisted: a connection's extra JSON is edited in the UI by people who
are not reviewing code, so anything not listed here (``options`` carrying ``-c search_path=…``,
``cursor``, ``iam`` …) is dropped instead of being passed to the driver.

Nothing here runs at DAG parse time: hooks are built inside ``open_adapter``, which operators call
from ``execute`` (``MongoHook.__init__`` already fetches its connection, so building hooks at parse
time would hit the secrets backend on every parse).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

from polymigrate.errors import PermanentError, TransientError

# libpq parameters that change transport security or identification, never what SQL runs.
POSTGRES_EXTRAS = frozenset({
    "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "connect_timeout",
    "application_name", "target_session_attrs", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "gssencmode", "channel_binding",
})


def postgres_client(conn_id: str) -> dict[str, Any]:
    """psycopg3 ``connect`` keyword arguments for an Airflow ``postgres`` connection."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook(postgres_conn_id=conn_id).connection
    kwargs: dict[str, Any] = {"host": conn.host, "port": conn.port, "user": conn.login,
                              "password": conn.password, "dbname": conn.schema}
    extras = conn.extra_dejson or {}
    kwargs.update({k: v for k, v in extras.items() if k in POSTGRES_EXTRAS})
    # A URI such as postgresql://user@/db?host=/run/postgresql puts the socket directory in the
    # extras; libpq would read it there, so it must not be dropped (the default socket is elsewhere).
    for key in ("host", "hostaddr", "port"):
        if kwargs.get(key) in (None, "") and extras.get(key) not in (None, ""):
            kwargs[key] = extras[key]
    return {k: v for k, v in kwargs.items() if v not in (None, "")}


def redis_client(conn_id: str):
    """A ``redis.Redis`` built by ``RedisHook`` (which itself allowlists ``db`` and the ssl extras)."""
    from airflow.providers.redis.hooks.redis import RedisHook

    return RedisHook(redis_conn_id=conn_id).get_conn()


CLIENT_FACTORIES: dict[str, Callable[[str], Any]] = {
    "postgresql": postgres_client,
    "redis": redis_client,
}


def describe(client: Any) -> str:
    """A client's target without credentials, for logs."""
    if isinstance(client, dict):
        return f"postgresql://{client.get('user', '')}@{client.get('host', '')}:{client.get('port', '')}/{client.get('dbname', '')}"
    kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {}) or {}
    return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"


def build_client(technology: str, conn_id: str) -> Any:
    """The client for ``conn_id``; a missing connection is permanent (a person must add it)."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        factory = CLIENT_FACTORIES[technology]
    except KeyError:
        raise PermanentError(f"no Airflow connection support for {technology} yet",
                             hint=f"supported: {', '.join(sorted(CLIENT_FACTORIES))}") from None
    try:
        return factory(conn_id)
    except AirflowNotFoundException:
        raise PermanentError(f"Airflow connection '{conn_id}' is not defined",
                             hint=f"add it (Admin → Connections, `airflow connections add {conn_id} …`, "
                                  f"or the AIRFLOW_CONN_{conn_id.upper()} variable)") from None
    except (ConnectionError, OSError) as exc:  # secrets backend or network briefly unavailable
        raise TransientError(f"cannot read connection '{conn_id}': {exc}") from exc


@contextmanager
def open_adapter(technology: str, conn_id: str, *, domain, settings=None) -> Iterator[Any]:
    """An adapter on the target of ``conn_id``; closes the adapter and the client afterwards."""
    from polymigrate.adapters import adapter_class

    client = build_client(technology, conn_id)
    adapter = adapter_class(technology)(client, domain=domain, settings=settings)
    try:
        yield adapter
    finally:
        adapter.close()
        close = getattr(client, "close", None)
        if callable(close):
            close()
