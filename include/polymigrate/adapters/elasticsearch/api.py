"""One REST seam for Elasticsearch and OpenSearch: the calls migrations need, whichever server answers.

Elasticsearch 8/9 is served by the official ``elasticsearch`` client (it refuses any server that
is not Elasticsearch), OpenSearch by ``opensearch-py``. The flavour is read from ``GET /``
(``version.distribution == "opensearch"``); everything above this module sees one ``SearchApi``
with named calls and one error type, so the adapter never branches on the flavour.

Both clients are used through their ``perform_request``: the typed APIs of the two differ in
names and keyword arguments, the REST calls migrations need do not (``_index_template``,
``_aliases``, ``_reindex``, ``_tasks`` are the same on Elasticsearch 7.10+/8/9 and OpenSearch 1/2).
Transport concerns (TLS, auth, pooling, retries on another node) stay with the clients.

Names from migration files are checked against the server's naming rules and percent-quoted
into paths (the REST analogue of quoting identifiers), never formatted in raw.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Iterable
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from polymigrate.adapters.elasticsearch import DESCRIPTOR
from polymigrate.errors import PermanentError

OPENSEARCH, ELASTICSEARCH = "opensearch", "elasticsearch"
# statuses a retry can fix: throttled, gateway/unavailable, and timeouts of a busy node
TRANSIENT_STATUSES = frozenset({408, 429, 502, 503, 504})
_BAD_INDEX_CHARS = re.compile(r'[\\/*?"<>| ,#:]')
DEFAULT_TIMEOUT = 60.0


# Both clients log every request at INFO: a reindex watched for an hour would bury a task log under
# poll lines. Unless the application configured these loggers, they log warnings and errors only.
for _name in ("opensearch", "elastic_transport.transport"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)


class SearchError(Exception):
    """A call failed; ``status`` is the HTTP status (None when the server was not reached)."""

    def __init__(self, message: str, *, status: int | None = None, type: str | None = None,
                 reason: str | None = None, body: Any = None, method: str = "", path: str = ""):
        self.status, self.type, self.reason, self.body = status, type, reason, body
        self.method, self.path = method, path
        super().__init__(message)

    @property
    def transient(self) -> bool:
        return self.status is None or self.status in TRANSIENT_STATUSES


def check_index_name(name: str, what: str = "index") -> str:
    """``name`` if the server would accept it as an index or alias name, else a PermanentError saying why."""
    problem = None
    if not name:
        problem = "is empty"
    elif name != name.lower():
        problem = "has upper-case letters"
    elif _BAD_INDEX_CHARS.search(name):
        problem = f"contains {_BAD_INDEX_CHARS.search(name).group(0)!r}"  # type: ignore[union-attr]
    elif name[0] in "-_+":
        problem = f"starts with {name[0]!r}"
    elif name in (".", ".."):
        problem = "is . or .."
    elif len(name.encode()) > 255:
        problem = "is longer than 255 bytes"
    if problem:
        raise PermanentError(f"{what} name {name!r} {problem}",
                             hint="index and alias names are lower case, without \\ / * ? \" < > | , # : or spaces, "
                                  "and do not start with - _ +")
    return name


def q(name: str) -> str:
    """A name as one path segment (``,`` and ``*`` kept: they are list and wildcard syntax)."""
    return quote(name, safe=",*")


@dataclass(frozen=True)
class ServerInfo:
    flavour: str   # "elasticsearch" | "opensearch"
    version: str   # "2.19.1"
    name: str      # cluster name

    @property
    def major(self) -> int:
        try:
            return int(self.version.split(".")[0])
        except ValueError:
            return 0

    @property
    def label(self) -> str:
        return f"{'OpenSearch' if self.flavour == OPENSEARCH else 'Elasticsearch'} {self.version}"


def flavour_of(root: dict) -> ServerInfo:
    """What ``GET /`` says the server is."""
    version = root.get("version") or {}
    flavour = OPENSEARCH if version.get("distribution") == "opensearch" else ELASTICSEARCH
    return ServerInfo(flavour, str(version.get("number", "?")), str(root.get("cluster_name", "?")))


class SearchApi:
    """The calls a migration makes, on an ``elasticsearch.Elasticsearch`` or ``opensearchpy.OpenSearch``."""

    def __init__(self, client: Any, *, owns_client: bool = False):
        self.client = client
        self.owns_client = owns_client
        module = type(client).__module__.split(".")[0]
        if module not in ("elasticsearch", "opensearchpy"):
            raise TypeError(f"expected an elasticsearch or opensearch-py client, got {type(client).__name__}")
        self._es = module == "elasticsearch"
        # Elasticsearch negotiates ``compatible-with=<client major>``; a 9.x client would be refused by an
        # 8.x server. 8 is accepted by both 8.x and 9.x, then the server's own major once known.
        self._compat = 8
        try:
            self.server = flavour_of(self.request("GET", "/"))
        except SearchError as exc:
            if type(exc.__cause__).__name__ != "UnsupportedProductError":
                raise
            raise PermanentError("the server is not Elasticsearch (the elasticsearch client refuses it; "
                                 "OpenSearch answers GET / with version.distribution=opensearch)",
                                 hint="give this target an 'opensearch' connection (OpenSearchHook), or an "
                                      "http(s):// URL to the CLI, which reads the flavour itself") from None
        if self._es:
            self._compat = max(8, self.server.major)

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> "SearchApi":
        """``http(s)://[user:password@]host:port[/prefix]`` (``elasticsearch://`` and ``opensearch://``
        mean http; ``?verify_certs=false`` / ``?ca_certs=PATH`` for TLS): probes ``GET /`` with
        opensearch-py (which talks to both), then keeps it for OpenSearch or switches to the
        elasticsearch client for Elasticsearch."""
        from opensearchpy import OpenSearch

        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        scheme = {"elasticsearch": "http", "opensearch": "http", "elasticsearchs": "https",
                  "opensearchs": "https"}.get(parts.scheme, parts.scheme)
        if query.get("use_ssl", "").lower() in ("true", "1", "yes"):
            scheme = "https"
        if scheme not in ("http", "https"):
            raise PermanentError(f"unsupported scheme {parts.scheme!r} for a search target",
                                 hint=f"use http://host:{DESCRIPTOR.default_port} or https://host:{DESCRIPTOR.default_port}")
        host = parts.hostname or "localhost"
        port = parts.port or DESCRIPTOR.default_port
        base = urlunsplit((scheme, f"{'[' + host + ']' if ':' in host else host}:{port}", parts.path.rstrip("/"), "", ""))
        auth = (parts.username or "", parts.password or "") if parts.username else None
        verify = query.get("verify_certs", "true").lower() not in ("false", "0", "no")
        tls: dict[str, Any] = {}
        if scheme == "https":
            tls["verify_certs"] = verify
            if query.get("ca_certs"):
                tls["ca_certs"] = query["ca_certs"]
        # several connections: the lease renews from its own thread while the run waits on a task
        # A 429 (rejected: a full queue, a tripped memory breaker) was not executed, so retrying it is
        # safe for every call, writes included; the other statuses are opensearch-py's defaults.
        probe = OpenSearch([base], http_auth=auth, timeout=timeout, pool_maxsize=4, max_retries=3,
                           retry_on_status=(429, 502, 503, 504), **tls)
        try:
            root = probe.transport.perform_request("GET", "/")
        except Exception as exc:
            probe.close()
            raise _normalise(exc, "GET", "/") from exc
        if flavour_of(root).flavour == OPENSEARCH:
            return cls(probe, owns_client=True)
        probe.close()
        from elasticsearch import Elasticsearch

        es_tls: dict[str, Any] = {}
        if scheme == "https":
            es_tls["verify_certs"] = verify
            if query.get("ca_certs"):
                es_tls["ca_certs"] = query["ca_certs"]
        client = Elasticsearch(base, basic_auth=auth, request_timeout=timeout, max_retries=3,
                               retry_on_status=(429, 502, 503, 504), **es_tls)
        return cls(client, owns_client=True)

    def close(self) -> None:
        if self.owns_client:
            self.client.close()

    @property
    def where(self) -> str:
        return client_where(self.client)

    # -- the one primitive ----------------------------------------------------------------------

    def request(self, method: str, path: str, *, params: dict | None = None, body: Any = None,
                timeout: float | None = None) -> Any:
        """One REST call; the parsed body (``True``/``False`` for HEAD). Raises ``SearchError``."""
        params = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        try:
            if self._es:
                mime = f"application/vnd.elasticsearch+json; compatible-with={self._compat}"
                headers = {"accept": mime}
                if body is not None:
                    headers["content-type"] = mime
                client = self.client.options(request_timeout=timeout) if timeout else self.client
                resp = client.perform_request(method, path, params=params or None, headers=headers, body=body)
                if method == "HEAD":
                    return resp.meta.status == 200
                return resp.body
            return self.client.transport.perform_request(method, path, params=params or None, body=body,
                                                         timeout=timeout)
        except Exception as exc:
            raise _normalise(exc, method, path) from exc

    # -- named calls ----------------------------------------------------------------------------

    def exists(self, index: str) -> bool:
        return bool(self.request("HEAD", f"/{q(index)}"))

    def create_index(self, index: str, body: dict | None = None) -> dict:
        return self.request("PUT", f"/{q(check_index_name(index))}", body=body or {})

    def delete_index(self, indices: Iterable[str]) -> dict:
        names = ",".join(check_index_name(i) for i in indices)
        return self.request("DELETE", f"/{q(names)}", params={"expand_wildcards": "none"})

    def get_mapping(self, index: str) -> dict:
        return self.request("GET", f"/{q(index)}/_mapping")

    def put_mapping(self, index: str, body: dict) -> dict:
        return self.request("PUT", f"/{q(index)}/_mapping", body=body)

    def get_settings(self, index: str, *, flat: bool = True) -> dict:
        return self.request("GET", f"/{q(index)}/_settings", params={"flat_settings": flat})

    def put_settings(self, index: str, settings: dict) -> dict:
        return self.request("PUT", f"/{q(index)}/_settings", body=settings, timeout=300)

    def indices(self, pattern: str) -> dict[str, dict]:
        """Every index matching ``pattern`` (hidden ones too) → {aliases: {alias: props}}; {} when none."""
        try:
            return self.request("GET", f"/{q(pattern)}/_alias", params={"expand_wildcards": "all"})
        except SearchError as exc:
            if exc.status == 404:
                return {}
            raise

    def alias_targets(self, alias: str) -> dict[str, dict]:
        """index → the alias's properties on it (filter, routing, is_write_index); {} when the alias does not exist."""
        try:
            found = self.request("GET", f"/_alias/{q(alias)}")
        except SearchError as exc:
            if exc.status == 404:
                return {}
            raise
        return {index: (v.get("aliases") or {}).get(alias, {}) for index, v in found.items()}

    def update_aliases(self, actions: list[dict]) -> dict:
        """One atomic ``_aliases`` call."""
        return self.request("POST", "/_aliases", body={"actions": actions})

    def put_index_template(self, name: str, body: dict) -> dict:
        return self.request("PUT", f"/_index_template/{q(name)}", body=body)

    def put_component_template(self, name: str, body: dict) -> dict:
        return self.request("PUT", f"/_component_template/{q(name)}", body=body)

    def put_pipeline(self, name: str, body: dict) -> dict:
        return self.request("PUT", f"/_ingest/pipeline/{q(name)}", body=body)

    def refresh(self, index: str) -> dict:
        return self.request("POST", f"/{q(index)}/_refresh", timeout=600)

    def count(self, index: str, query: dict | None = None) -> int:
        body = {"query": query} if query else None
        return int(self.request("POST" if body else "GET", f"/{q(index)}/_count", body=body, timeout=300)["count"])

    def search(self, index: str, body: dict, **params: Any) -> dict:
        return self.request("POST", f"/{q(index)}/_search", body=body, params=params)

    def reindex(self, body: dict, *, slices: int | str | None = None, requests_per_second: float | None = None,
                refresh: bool = False) -> str:
        """Start ``_reindex`` as a task; its id (``node:number``)."""
        resp = self.request("POST", "/_reindex", body=body,
                            params={"wait_for_completion": False, "slices": slices,
                                    "requests_per_second": requests_per_second, "refresh": refresh or None})
        return str(resp["task"])

    def task(self, task_id: str) -> dict | None:
        """``GET _tasks/<id>``: ``{completed, task, response|error}``; None when the server no longer knows it."""
        try:
            return self.request("GET", f"/_tasks/{q(task_id)}")
        except SearchError as exc:
            if exc.status == 404:
                return None
            raise

    def cancel_task(self, task_id: str) -> None:
        try:
            self.request("POST", f"/_tasks/{q(task_id)}/_cancel")
        except SearchError as exc:
            if exc.status != 404:
                raise

    def health(self, index: str, *, wait_for_status: str = "yellow", timeout: str = "60s") -> dict:
        """Cluster health of ``index``; waits for ``yellow`` (primaries active), never for green:
        a single-node cluster never reaches it."""
        return self.request("GET", f"/_cluster/health/{q(index)}",
                            params={"wait_for_status": wait_for_status, "timeout": timeout}, timeout=120)

    def stats(self, index: str) -> dict[str, dict]:
        """index → {docs, bytes} (primaries) for every index ``index`` names or aliases."""
        resp = self.request("GET", f"/{q(index)}/_stats/docs,store", params={"expand_wildcards": "open,hidden"})
        return {name: {"docs": v["primaries"]["docs"]["count"], "bytes": v["primaries"]["store"]["size_in_bytes"]}
                for name, v in (resp.get("indices") or {}).items()}

    # -- documents (ledger and lease) -----------------------------------------------------------

    def get_doc(self, index: str, doc_id: str) -> dict | None:
        """The document with ``_seq_no`` / ``_primary_term``; None when absent. Realtime."""
        try:
            resp = self.request("GET", f"/{q(index)}/_doc/{q(doc_id)}")
        except SearchError as exc:
            if exc.status == 404:
                return None
            raise
        return resp if resp.get("found") else None

    def put_doc(self, index: str, doc_id: str, doc: dict, *, create: bool = False, if_seq_no: int | None = None,
                if_primary_term: int | None = None, refresh: str | None = "wait_for") -> dict:
        """Write a document: ``create`` fails with 409 if it exists; ``if_seq_no``/``if_primary_term`` fail
        with 409 unless the stored document is exactly that version."""
        params: dict[str, Any] = {"refresh": refresh}
        if create:
            params["op_type"] = "create"
        if if_seq_no is not None:
            params["if_seq_no"], params["if_primary_term"] = if_seq_no, if_primary_term
        return self.request("PUT", f"/{q(index)}/_doc/{q(doc_id)}", params=params, body=doc)

    def delete_doc(self, index: str, doc_id: str, *, if_seq_no: int | None = None,
                   if_primary_term: int | None = None, refresh: str | None = None) -> None:
        params: dict[str, Any] = {"refresh": refresh}
        if if_seq_no is not None:
            params["if_seq_no"], params["if_primary_term"] = if_seq_no, if_primary_term
        self.request("DELETE", f"/{q(index)}/_doc/{q(doc_id)}", params=params)


def client_where(client: Any) -> str:
    """scheme://host:port of a client's first node, without credentials (for logs)."""
    try:
        if type(client).__module__.split(".")[0] == "elasticsearch":
            node = client.transport.node_pool.all()[0].config
            return f"{node.scheme}://{node.host}:{node.port}"
        return client.transport.connection_pool.connections[0].host
    except Exception:  # noqa: BLE001  only for display
        return "?"


def _param(v: Any) -> Any:
    return str(v).lower() if isinstance(v, bool) else v


def _normalise(exc: Exception, method: str, path: str) -> SearchError:
    """The two clients' errors as one ``SearchError``: status, ES error type and reason, body."""
    status: Any = getattr(getattr(exc, "meta", None), "status", None)  # elasticsearch ApiError
    body: Any = getattr(exc, "body", None)
    if status is None and hasattr(exc, "status_code"):                   # opensearch-py TransportError
        status = exc.status_code  # type: ignore[attr-defined]
        body = exc.info if isinstance(exc.info, (dict, str)) else None  # type: ignore[attr-defined]
    if not isinstance(status, int):
        status = None  # not reached: connection refused, timeout, TLS
    err = body.get("error") if isinstance(body, dict) else None
    etype = err.get("type") if isinstance(err, dict) else None
    reason = err.get("reason") if isinstance(err, dict) else (err if isinstance(err, str) else None)
    if isinstance(err, dict) and err.get("caused_by", {}).get("reason"):
        reason = f"{reason}: {err['caused_by']['reason']}"
    if status is None:
        message = f"{method} {path}: server not reached: {type(exc).__name__}: {exc}"
    else:
        message = f"{method} {path} → {status} {etype or ''}: {reason or str(exc)}".replace("  ", " ")
    return SearchError(message, status=status, type=etype, reason=reason, body=body, method=method, path=path)
