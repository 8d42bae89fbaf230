"""Every polymigrate DAG: one per (domain, environment) of the spec tree.

POLYMIGRATE_SPECS points at another spec tree (default: migration_specs/ beside this folder).
Parsing reads spec YAML only: no database, no connection, no migration file contents.
"""

import os
from pathlib import Path

from polymigrate_airflow.renderer import build_dags

SPECS = os.environ.get("POLYMIGRATE_SPECS") or str(Path(__file__).resolve().parent.parent / "migration_specs")

globals().update(build_dags(SPECS))
