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


# Client options that change transport security or timeouts, never where requests go or as whom;
# ``headers``, ``opaque_id`` and the like stay out.
SEARCH_EXTRAS = frozenset({"use_ssl", "verify_certs", "ca_certs", "timeout", "http_compress"})


def search_client(conn_id: str):
    """An ``opensearchpy.OpenSearch`` or ``elasticsearch.Elasticsearch`` for ``conn_id``, whichever the
    server is: ``GET /`` through the client ``OpenSearchHook`` builds (it talks to both), kept for
    OpenSearch; for Elasticsearch the client comes from ``ElasticsearchPythonHook`` (the official
    client, which refuses OpenSearch). Works with connection types ``opensearch``, ``elasticsearch``
    and ``http``/``https``; extras are allowlisted before either hook sees them."""
    import json

    from airflow.providers.opensearch.hooks.opensearch import OpenSearchHook
    from airflow.sdk import BaseHook, Connection

    import polymigrate.adapters.es_api  # noqa: F401  quiets the clients' per-request INFO lines first

    conn = BaseHook.get_connection(conn_id)
    extras = {k: v for k, v in (conn.extra_dejson or {}).items() if k in SEARCH_EXTRAS}
    if conn.conn_type == "https" or str(conn.schema or "").lower() == "https":
        extras["use_ssl"] = True
    clean = Connection(conn_id=conn.conn_id, conn_type=conn.conn_type, host=conn.host, port=conn.port or 9200,
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


# MongoDB client options that change transport security, authentication source, topology or timeouts,
# never what a migration does (``MongoHook`` would pass any extra straight to ``MongoClient``).
MONGO_EXTRAS = frozenset({
    "tls", "ssl", "tlsCAFile", "tlsCertificateKeyFile", "tlsCertificateKeyFilePassword", "tlsAllowInvalidHostnames",
    "tlsAllowInvalidCertificates", "tlsInsecure", "authSource", "authMechanism", "replicaSet", "directConnection",
    "readPreference", "w", "journal", "retryWrites", "retryReads", "connectTimeoutMS", "socketTimeoutMS",
    "serverSelectionTimeoutMS", "heartbeatFrequencyMS", "appName", "compressors", "loadBalanced",
})


def mongo_client(conn_id: str):
    """A ``MongoConnection``: the ``MongoClient`` ``MongoHook`` builds (allowlisted extras only), plus the URL
    a Node child connects with for migrate-mongo ``.js`` files (it reaches the child in its environment)."""
    from urllib.parse import urlencode

    from airflow.providers.mongo.hooks.mongo import MongoHook

    from polymigrate.adapters.mongo import MongoConnection

    hook = MongoHook(mongo_conn_id=conn_id)
    hook.extras = {k: v for k, v in hook.extras.items() if k in MONGO_EXTRAS}
    client = hook.get_conn()  # adds tlsAllowInvalidCertificates when the connection allows insecure TLS
    options = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in hook.extras.items()}
    url = hook.uri + ("?" + urlencode(options) if options else "")
    return MongoConnection(client, url=url, database=hook.connection.schema or None)


CLIENT_FACTORIES: dict[str, Callable[[str], Any]] = {
    "postgresql": postgres_client,
    "redis": redis_client,
    "elasticsearch": search_client,
    "mongodb": mongo_client,
}


def describe(client: Any) -> str:
    """A client's target without credentials, for logs."""
    if isinstance(client, dict):
        return f"postgresql://{client.get('user', '')}@{client.get('host', '')}:{client.get('port', '')}/{client.get('dbname', '')}"
    if type(client).__module__.split(".")[0] in ("elasticsearch", "opensearchpy"):
        from polymigrate.adapters.es_api import client_where
        return client_where(client)
    if getattr(client, "url", None) and str(client.url).startswith("mongodb"):
        from polymigrate.connections import redact
        return redact(client.url.split("?")[0])
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
