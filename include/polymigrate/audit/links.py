"""Links from an audit event back to the Airflow run that produced it."""

from __future__ import annotations

import os
from urllib.parse import quote


def run_url(dag_id: str | None, run_id: str | None, base_url: str | None = None) -> str | None:
    """The Airflow UI page of a DAG run, or None when the run or the UI base URL is unknown.

    The base URL defaults to ``AIRFLOW__API__BASE_URL``, the setting Airflow itself uses to build
    links, so the link works wherever the API server is published.
    """
    base = base_url or os.environ.get("AIRFLOW__API__BASE_URL")
    if not (base and dag_id and run_id):
        return None
    return f"{base.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
