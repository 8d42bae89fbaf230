"""Grant Airflow FAB roles read access to chosen DAGs, and create users with them.

For deployments on the FAB auth manager (apache-airflow-providers-fab), where the audit page shows
each user the history of the DAGs their roles may read (docs/audit.md#who-reads-what). Run it in the
Airflow environment (same AIRFLOW_HOME / AIRFLOW__* as the API server), with a JSON document on
stdin, so passwords never appear in a process list or a shell history:

    {"dags": ["migrate__warehousing__production"],
     "roles": {"Warehousing": [["can_read", "DAG:migrate__warehousing__production"]],
               "Compliance": [["can_read", "DAGs"]]},
     "users": {"ward": {"role": "Warehousing", "password": "..."}}}

``dags``: per-DAG resources are created by FAB only for DAGs it has synced (``airflow sync-perm
--include-dags``); listing them here creates them, so a role can be granted a DAG the DAG processor
has not parsed yet. ``roles`` are created or extended (never narrowed); ``users`` are created when
missing. Prints what it did, never a password.
"""

from __future__ import annotations

import json
import sys


def apply(spec: dict) -> list[str]:
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    done: list[str] = []
    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        for dag in spec.get("dags", []):
            sm.sync_perm_for_dag(dag, None)
            done.append(f"DAG resources of {dag}")
        roles = spec.get("roles", {})
        sm.bulk_sync_roles([{"role": name, "perms": [tuple(p) for p in perms]} for name, perms in roles.items()])
        done += [f"role {name}: {', '.join(' on '.join(p) for p in perms)}" for name, perms in roles.items()]
        for name, user in spec.get("users", {}).items():
            if sm.find_user(username=name):
                done.append(f"user {name} exists (left as it is)")
                continue
            role = sm.find_role(user["role"])
            if role is None:
                raise SystemExit(f"user {name}: no role {user['role']!r}; add it under \"roles\" first")
            if not sm.add_user(name, name, "-", user.get("email", f"{name}@localhost"), role, user["password"]):
                raise SystemExit(f"user {name} was not created (see the FAB log above)")
            done.append(f"user {name} with role {user['role']}")
    return done


if __name__ == "__main__":
    for line in apply(json.load(sys.stdin)):
        print(line)
