"""Everything of polymigrate that imports Airflow: operators, approval, DAG renderer, UI plugin.

Kept thin, like a provider package: resolve connections through provider hooks, call the core,
report. Importing this package must stay cheap (no heavy imports at module level).
"""
