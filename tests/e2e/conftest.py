"""Whole DAGs through Airflow, in an isolated AIRFLOW_HOME (set before anything imports airflow).

Airflow reads its configuration once per process, so the home, the DAGs folder and the metadata
database (SQLite in a temporary folder) are fixed here at collection time, and ``airflow db
migrate`` runs once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_HOME = Path(tempfile.mkdtemp(prefix="polymigrate-airflow-e2e-"))
os.environ.update({
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
})
for _key in [k for k in os.environ if k.startswith("AIRFLOW_CONN_")]:
    del os.environ[_key]  # "no connection configured" must hold for the DagBag tests


@pytest.fixture(scope="session")
def airflow_db():
    """The metadata database, migrated once per session."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return _HOME


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)
