"""Airflow connection → adapter client, through the provider hooks, at execute time only.

Hooks own connections (as in Airflow's provider packages); this module only picks the fields an
adapter needs, keeping the extras ``polymigrate.connections.EXTRAS`` allows (the CLI keeps the same
ones, so a connection means the same target wherever it is read).

Nothing here runs at DAG parse time: clients are built by ``AirflowConnector.open``, which the
command layer calls while a task executes (``MongoHook.__init__`` already fetches its connection,
so building hooks at parse time would hit the secrets backend on every parse).
"""

from __future__ import annotations

from typing import Any, Callable

from polymigrate.adapters import TECHNOLOGIES
from polymigrate.commands import Connector
from polymigrate.connections import LOCATION_PARAMS, allowed_extras, env_var
from polymigrate.errors import PermanentError, TransientError


def postgres_client(conn_id: str) -> dict[str, Any]:
    """psycopg3 ``connect`` keyword arguments for an Airflow ``postgres`` connection."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    conn = PostgresHook(postgres_conn_id=conn_id).connection
    kwargs: dict[str, Any] = {"host": conn.host, "port": conn.port, "user": conn.login,
                              "password": conn.password, "dbname": conn.schema}
    extras = conn.extra_dejson or {}
    kwargs.update(allowed_extras("postgresql", extras))
    # A URI such as postgresql://user@/db?host=/run/postgresql puts the socket directory in the
    # extras; libpq would read it there, so it must not be dropped (the default socket is elsewhere).
    for key in LOCATION_PARAMS:
        if kwargs.get(key) in (None, "") and extras.get(key) not in (None, ""):
            kwargs[key] = extras[key]
    return {k: v for k, v in kwargs.items() if v not in (None, "")}


def redis_client(conn_id: str):
    """A ``redis.Redis`` built by ``RedisHook`` (which itself allowlists ``db`` and the ssl extras)."""
    from airflow.providers.redis.hooks.redis import RedisHook

    return RedisHook(redis_conn_id=conn_id).get_conn()


def search_client(conn_id: str):
    """An ``opensearchpy.OpenSearch`` or ``elasticsearch.Elasticsearch`` for ``conn_id``, whichever the
    server is: ``GET /`` through the client ``OpenSearchHook`` builds (it talks to both), kept for
    OpenSearch; for Elasticsearch the client comes from ``ElasticsearchPythonHook`` (the official
    client, which refuses OpenSearch). Works with connection types ``opensearch``, ``elasticsearch``
    and ``http``/``https``; extras are allowlisted before either hook sees them."""
    import json

    from airflow.providers.opensearch.hooks.opensearch import OpenSearchHook
    from airflow.sdk import BaseHook, Connection

    import polymigrate.adapters.elasticsearch.api  # noqa: F401  quiets the clients' per-request INFO lines first

    conn = BaseHook.get_connection(conn_id)
    extras = allowed_extras("elasticsearch", conn.extra_dejson or {})
    if conn.conn_type == "https" or str(conn.schema or "").lower() == "https":
        extras["use_ssl"] = True
    clean = Connection(conn_id=conn.conn_id, conn_type=conn.conn_type, host=conn.host, port=conn.port or TECHNOLOGIES["elasticsearch"].default_port,
                       login=conn.login, password=conn.password, extra=json.dumps(extras))

    class _AllowlistedOpenSearchHook(OpenSearchHook):
        def __init__(self) -> None:
            self.__dict__["conn"] = clean  # the hook reads extras from ``conn``: give it the allowlisted ones
            super().__init__(open_search_conn_id=conn_id, log_query=False)

    probe = _AllowlistedOpenSearchHook().client
    try:
        root = probe.transport.perform_request("GET", "/")
    except Exception as exc:  # noqa: BLE001  unreachable now; the task's retry may find it
        probe.close()
        raise TransientError(f"search connection '{conn_id}' ({conn.host}:{clean.port}) did not answer GET /: {exc}") from exc
    if (root.get("version") or {}).get("distribution") == "opensearch":
        return probe
    probe.close()
    from airflow.providers.elasticsearch.hooks.elasticsearch import ElasticsearchPythonHook

    scheme = "https" if str(extras.get("use_ssl", "")).lower() in ("true", "1", "yes") else "http"
    args: dict[str, Any] = {}
    if conn.login:
        args["basic_auth"] = (conn.login, conn.password or "")
    elif conn.password:
        args["api_key"] = conn.password
    for key in ("verify_certs", "ca_certs", "http_compress"):
        if key in extras:
            args[key] = extras[key] if key == "ca_certs" else str(extras[key]).lower() in ("true", "1", "yes")
    if extras.get("timeout"):
        args["request_timeout"] = float(extras["timeout"])
    return ElasticsearchPythonHook(hosts=[f"{scheme}://{conn.host}:{clean.port}"], es_conn_args=args).get_conn


def mongo_client(conn_id: str):
    """A ``MongoConnection``: the ``MongoClient`` ``MongoHook`` builds (allowlisted extras only), plus the URL
    a Node child connects with for migrate-mongo ``.js`` files (it reaches the child in its environment)."""
    from urllib.parse import urlencode

    from airflow.providers.mongo.hooks.mongo import MongoHook

    from polymigrate.adapters.mongodb.adapter import MongoConnection

    hook = MongoHook(mongo_conn_id=conn_id)
    hook.extras = allowed_extras("mongodb", hook.extras)
    client = hook.get_conn()  # adds tlsAllowInvalidCertificates when the connection allows insecure TLS
    options = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in hook.extras.items()}
    url = hook.uri + ("?" + urlencode(options) if options else "")
    return MongoConnection(client, url=url, database=hook.connection.schema or None)


# One entry per technology: (connection id) -> the client its adapter is given.
CLIENT_FACTORIES: dict[str, Callable[[str], Any]] = {key: globals()[t.client_factory] for key, t in TECHNOLOGIES.items()}


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
        raise PermanentError(f"Airflow connection '{conn_id}' is not defined", hint=how_to_configure(conn_id)) from None
    except (ConnectionError, OSError) as exc:  # secrets backend or network briefly unavailable
        raise TransientError(f"cannot read connection '{conn_id}': {exc}") from exc


def how_to_configure(conn_id: str) -> str:
    return (f"add it (Admin → Connections, `airflow connections add {conn_id} …`, "
            f"or the {env_var(conn_id)} variable)")


def audit_conninfo() -> dict[str, Any] | None:
    """The audit store's connection (``polymigrate_audit``), None when it is not defined."""
    from polymigrate.connections import AUDIT_CONN_ID

    try:
        return build_client("postgresql", AUDIT_CONN_ID)
    except PermanentError:  # not defined: the policy decides whether that is allowed
        return None


class AirflowConnector(Connector):
    """Adapters on Airflow connections; the clients the hooks built are closed with the connector."""

    def __init__(self) -> None:
        self._clients: list[Any] = []

    def open(self, environment, region: str, technology: str, domain):
        from polymigrate.adapters import adapter_class

        try:
            cls = adapter_class(technology)
        except KeyError as exc:
            raise PermanentError(f"{region}/{technology}: {exc.args[0]}",
                                 hint="this technology's adapter is not installed in this deployment") from None
        client = build_client(technology, environment.connection_id(region, technology))
        self._clients.append(client)
        return cls(client, domain=domain.name, settings=domain.technologies.get(technology))

    def how_to_configure(self, conn_id: str) -> str:
        return how_to_configure(conn_id)

    def close(self) -> None:
        clients, self._clients = self._clients, []
        for c in clients:
            close = getattr(c, "close", None)
            if callable(close):
                close()
