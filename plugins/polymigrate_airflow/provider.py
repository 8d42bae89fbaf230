"""What Airflow's provider manager reads about polymigrate (the ``apache_airflow_provider`` entry point
in pyproject.toml), so ``airflow providers list`` shows it as it shows any provider package.

Airflow validates this dict against its ``provider_info.schema.json`` and refuses the entry when
``package-name`` is not the installed distribution's name. polymigrate defines no connection type of
its own: its targets are ordinary ``postgres``, ``mongo``, ``redis``, ``elasticsearch`` and
``opensearch`` connections of those providers, so ``connection-types`` is left out rather than
registering hooks that would shadow theirs. The plugin (UI page, timetable) stays on the
``airflow.plugins`` entry point: listing it here too would load it twice.

Nothing here imports Airflow or the operators: the provider manager calls this in every process.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

PACKAGE = "polymigrate"
INTEGRATION = "polymigrate"

# Modules whose operators a DAG of polymigrate uses; tests/unit/test_deploy.py imports each and checks it
# defines an operator, so a renamed module cannot leave a stale entry that the provider manager warns about.
OPERATOR_MODULES = ["polymigrate_airflow.operators", "polymigrate_airflow.approval"]


def _version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def get_provider_info() -> dict:
    return {
        "package-name": PACKAGE,
        "name": "polymigrate",
        "description": "Database migrations for PostgreSQL, MongoDB, Redis and Elasticsearch/OpenSearch across "
                       "environments and regions, run as Airflow DAGs (plan, approve, apply, verify, drift).\n",
        "versions": [_version()],
        "integrations": [{"integration-name": INTEGRATION, "tags": ["software"]}],
        "operators": [{"integration-name": INTEGRATION, "python-modules": list(OPERATOR_MODULES)}],
    }
