"""Where the CLI finds targets: connection URIs in the environment, never in specs.

The variable names follow Airflow's own convention (``AIRFLOW_CONN_<CONN_ID>``), so the same
connection id resolves to the same target in the CLI and in Airflow's environment secrets backend.
"""

from __future__ import annotations

import os
import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit


def env_var(conn_id: str) -> str:
    return "AIRFLOW_CONN_" + re.sub(r"[^A-Za-z0-9]", "_", conn_id).upper()


# Connection extras a client may be given: TLS and timeouts. Anything else an Airflow connection carries
# (Airflow-only keys, driver options we do not vet) stays out: libpq refuses unknown parameters.
ALLOWED_EXTRAS = frozenset({"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "connect_timeout",
                            "target_session_attrs", "application_name", "ssl", "ssl_cert_reqs", "ssl_ca_certs",
                            "use_ssl", "verify_certs", "ca_certs",
                            # MongoDB (same list as the Airflow layer's MONGO_EXTRAS; srv picks mongodb+srv)
                            "tls", "tlsCAFile", "tlsCertificateKeyFile", "tlsAllowInvalidHostnames",
                            "tlsAllowInvalidCertificates", "tlsInsecure", "authSource", "authMechanism",
                            "replicaSet", "directConnection", "readPreference", "w", "journal", "retryWrites",
                            "retryReads", "connectTimeoutMS", "socketTimeoutMS", "serverSelectionTimeoutMS",
                            "appName", "compressors", "loadBalanced", "srv"})


# Where the server is, not how to talk to it: libpq reads these from a URI's query string too
# (``postgresql://user@/db?host=/run/postgresql`` is how a unix socket directory is written), so
# dropping them would silently point the CLI at a different server.
LOCATION_PARAMS = frozenset({"host", "hostaddr", "port"})


def url_for(conn_id: str) -> str | None:
    """The target URL of ``AIRFLOW_CONN_<ID>`` (URI or Airflow's JSON form), with allowlisted extras only."""
    value = os.environ.get(env_var(conn_id))
    if not value:
        return None
    if value.lstrip().startswith("{"):
        import json
        d = json.loads(value)
        auth = quote(str(d.get("login") or ""), safe="")
        if d.get("password"):
            auth += ":" + quote(str(d["password"]), safe="")
        # A socket directory ("/run/postgresql") is a host too: percent-encoded, as libpq reads it.
        host = str(d.get("host") or "")
        host = quote(host, safe="") if host.startswith("/") else host
        netloc = (auth + "@" if auth else "") + host + (f":{d['port']}" if d.get("port") else "")
        extra = d.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra or "{}")
        query = urlencode({k: v for k, v in extra.items() if k in ALLOWED_EXTRAS}, quote_via=quote)
        return f"{d.get('conn_type')}://{netloc}/{quote(str(d.get('schema') or ''), safe='')}" + (f"?{query}" if query else "")
    parts = urlsplit(value)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k in ALLOWED_EXTRAS or (k in LOCATION_PARAMS and parts.scheme.startswith("postgres"))]
    return urlunsplit(parts._replace(query=urlencode(kept, quote_via=quote)))  # libpq reads no "+" as space


# Query parameters (and libpq key=value words) that carry a secret: libpq accepts ?password=…
_SECRET_PARAM = r"(?:ssl)?password|passwd|pwd|token|secret"
_SECRET_QUERY = re.compile(rf"(^|[&;])({_SECRET_PARAM})=[^&;]*", re.IGNORECASE)
_SECRET_WORD = re.compile(rf"(\b(?:{_SECRET_PARAM})\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact(url: str) -> str:
    """The URL (or libpq ``key=value`` string) without its password, wherever it was given, for logs,
    progress lines, errors, plans and lock owners."""
    if "://" not in url:
        return _SECRET_WORD.sub(r"\1***", url)
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        parts = parts._replace(netloc=netloc)
    if parts.query:
        parts = parts._replace(query=_SECRET_QUERY.sub(r"\1\2=***", parts.query))
    return urlunsplit(parts)
