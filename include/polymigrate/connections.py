"""Where the CLI finds targets: connection URIs in the environment, never in specs.

The variable names follow Airflow's own convention (``AIRFLOW_CONN_<CONN_ID>``), so the same
connection id resolves to the same target in the CLI and in Airflow's environment secrets backend.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit


def env_var(conn_id: str) -> str:
    return "AIRFLOW_CONN_" + re.sub(r"[^A-Za-z0-9]", "_", conn_id).upper()


def url_for(conn_id: str) -> str | None:
    value = os.environ.get(env_var(conn_id))
    if value and value.lstrip().startswith("{"):
        import json
        d = json.loads(value)
        auth = d.get("login") or ""
        if d.get("password"):
            auth += ":" + d["password"]
        host = (auth + "@" if auth else "") + (d.get("host") or "") + (f":{d['port']}" if d.get("port") else "")
        return f"{d.get('conn_type')}://{host}/{d.get('schema') or ''}"
    return value


def redact(url: str) -> str:
    """The URL without its password, for logs, plans and lock owners."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)
