"""Where targets are: connection ids, the extras a client may be given, URLs without credentials.

The CLI finds targets through connection URIs in the environment, never in specs. The variable names
follow Airflow's own convention (``AIRFLOW_CONN_<CONN_ID>``), so the same connection id resolves to
the same target in the CLI and in Airflow's environment secrets backend; both keep the same extras
(``EXTRAS``), so one connection means one thing wherever it is read.
"""

from __future__ import annotations

import json
import os
import re
import socket
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from polymigrate.adapters import TECHNOLOGIES

AUDIT_CONN_ID = "polymigrate_audit"  # the audit store's connection, for every task, CLI run and the UI page

# Connection extras a client may be given, per technology (each package's descriptor): transport
# security, timeouts and how the client names itself. A connection's extra JSON is edited in the UI by
# people who are not reviewing code, so anything else (``options`` carrying ``-c search_path=…``,
# Airflow-only keys, driver options nobody vetted) is dropped instead of being passed to the driver.
EXTRAS: dict[str, frozenset[str]] = {key: t.extras for key, t in TECHNOLOGIES.items()}
# Where the server is, not how to talk to it: libpq reads these from a URI's query string too
# (``postgresql://user@/db?host=/run/postgresql`` is how a unix socket directory is written), so
# dropping them would silently point the CLI at a different server.
LOCATION_PARAMS = frozenset({"host", "hostaddr", "port"})
# URL schemes (and Airflow conn types) per technology: the CLI's ``--url`` and AIRFLOW_CONN_* values
SCHEMES: dict[str, str] = {scheme: key for key, t in TECHNOLOGIES.items() for scheme in t.schemes}
DEFAULT_PORTS = {key: t.default_port for key, t in TECHNOLOGIES.items()}


def env_var(conn_id: str) -> str:
    return "AIRFLOW_CONN_" + re.sub(r"[^A-Za-z0-9]", "_", conn_id).upper()


def technology_of(url: str) -> str | None:
    """The technology a URL's scheme names (``postgresql+psycopg`` counts as ``postgresql``)."""
    return SCHEMES.get(urlsplit(url).scheme.split("+")[0].lower())


def allowed_extras(technology: str | None, extras: dict[str, Any]) -> dict[str, Any]:
    keep = EXTRAS.get(technology or "", frozenset())
    return {k: v for k, v in extras.items() if k in keep}


def url_for(conn_id: str) -> str | None:
    """The target URL of ``AIRFLOW_CONN_<ID>`` (URI or Airflow's JSON form), with allowlisted extras only."""
    value = os.environ.get(env_var(conn_id))
    if not value:
        return None
    if value.lstrip().startswith("{"):
        d = json.loads(value)
        tech = SCHEMES.get(str(d.get("conn_type") or "").lower())
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
        # Redis keeps its DB number in the extras, as RedisHook reads it; in a URL it is the path
        path = str(extra.get("db", 0)) if tech == "redis" else str(d.get("schema") or "")
        query = urlencode(allowed_extras(tech, extra), quote_via=quote)
        return f"{d.get('conn_type')}://{netloc}/{quote(path, safe='')}" + (f"?{query}" if query else "")
    parts = urlsplit(value)
    tech = technology_of(value)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k in EXTRAS.get(tech or "", ()) or (k in LOCATION_PARAMS and tech == "postgresql")]
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


def describe(conninfo: str | dict[str, Any]) -> str:
    """Where a client connects (a URL or psycopg connect arguments), without credentials."""
    if isinstance(conninfo, str):
        return redact(conninfo)
    c = conninfo
    return f"postgresql://{c.get('user', '')}@{c.get('host', '')}:{c.get('port', DEFAULT_PORTS['postgresql'])}/{c.get('dbname', '')}"


def _endpoint(url: str) -> tuple[str | None, str, int, str] | None:
    """(technology, host, port, database) a URL points at; None when it cannot be read."""
    tech = technology_of(url)
    try:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        host = (parts.hostname or query.get("host") or "localhost").lower()
        port = parts.port or int(query.get("port") or DEFAULT_PORTS.get(tech or "", 0))
    except ValueError:
        return None
    database = parts.path.lstrip("/") or query.get("dbname") or query.get("db") or ""
    if tech == "redis":
        database = database or "0"
    elif tech == "mongodb":
        database = database.split("?")[0]
    elif tech == "postgresql":
        database = database or parts.username or ""  # libpq's default database is the user's name
    return tech, host, port, database


def _addresses(host: str) -> set[str]:
    if host.startswith("/"):
        return {host.rstrip("/")}  # a unix socket directory
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return {host}


def same_target(a: str, b: str) -> bool:
    """Whether two URLs reach the same database: technology, host (by address), port and database
    must agree; user, password and options do not matter."""
    ea, eb = _endpoint(a), _endpoint(b)
    if ea is None or eb is None or ea[0] != eb[0] or ea[2:] != eb[2:]:
        return False
    return ea[1] == eb[1] or bool(_addresses(ea[1]) & _addresses(eb[1]))
