"""What every polymigrate task would otherwise import in its own process, imported once by the
process Airflow forks the tasks from.

Airflow 3.3 starts LocalExecutor's workers from a ``forkserver`` when ``[scheduler] mp_start_method``
is ``forkserver``, and imports ``[scheduler] mp_forkserver_preload`` there first; each task is forked
from a worker, so it inherits these modules copy-on-write instead of importing them again::

    AIRFLOW__SCHEDULER__MP_START_METHOD=forkserver
    AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD=polymigrate_airflow.preload

Measured on 2026-12-07 (docs/airflow.md, P6): a verify task that runs a PostgreSQL suite imports
GX for 2.3-3 s of CPU and any task its driver, its provider hook and the command layer for 0.3-0.5 s;
a scheduler pays them once. The cost: code changed on disk reaches the tasks when the scheduler
restarts (as it reaches the scheduler itself), and the forkserver and each worker carry these
modules (shared pages, until written).

Nothing here connects to anything or reads a spec: a module that is not installed (a technology's
extra left out) is skipped, so the preload never stops the scheduler. multiprocessing would skip
this whole module on an ImportError too, silently; the imports are guarded one by one instead.
"""

from __future__ import annotations

import importlib

# Airflow's own task path first (under fork the workers inherit it from the scheduler), then the DAG
# file's imports, then what a task opens: the command layer, the provider hooks and drivers.
MODULES = (
    "airflow.executors.local_executor",
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.dagbag",  # the task's parse of its DAG file (0.4 s: the ORM models)
    "airflow.providers.standard.operators.hitl",
    "airflow.providers.standard.operators.python",
    "airflow.providers.openlineage.extractors",
    "polymigrate_airflow.renderer",
    "polymigrate_airflow.operators",
    "polymigrate_airflow.connections",
    "polymigrate.commands",
    "airflow.providers.postgres.hooks.postgres",
    "airflow.providers.redis.hooks.redis",
    "airflow.providers.mongo.hooks.mongo",
    "airflow.providers.opensearch.hooks.opensearch",
    "airflow.providers.elasticsearch.hooks.elasticsearch",
    "psycopg",
)


def preload() -> list[str]:
    """Import ``MODULES`` and GX (as the verify imports it); return what could not be imported."""
    missing = []
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    try:
        from polymigrate.expectations_gx import import_gx

        import_gx()  # with GX_ANALYTICS_ENABLED=false and quiet logs, as the verify imports it
    except ImportError:
        missing.append("great_expectations")
    return missing


preload()
