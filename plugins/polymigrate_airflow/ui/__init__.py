"""The audit UI: a FastAPI app the plugin mounts in Airflow's API server (see ``app.create_app``)."""
