"""Airflow's Celery configuration, plus ``polymigrate_airflow.preload`` imported by each Celery
worker before it forks its pool: a task, forked from a pool process, inherits polymigrate, its
drivers and GX instead of importing them again (the CeleryExecutor's side of the LocalExecutor's
``mp_forkserver_preload``; see that module)::

    AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=polymigrate_airflow.celery_config.CELERY_CONFIG

Everything else is Airflow's default (``DEFAULT_CELERY_CONFIG``, built from ``[celery]``).
"""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG,
                 "imports": (*DEFAULT_CELERY_CONFIG.get("imports", ()), "polymigrate_airflow.preload")}
