"""The Airflow plugin entry point (registered in pyproject.toml under ``airflow.plugins``)."""

from airflow.plugins_manager import AirflowPlugin


class PolymigratePlugin(AirflowPlugin):
    name = "polymigrate"
