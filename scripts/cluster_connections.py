"""The Airflow connections of `make cluster`, as shell ``export`` lines (scripts/cluster.sh).

Every (environment, region, technology) of the spec tree gets a target of its own on the engines
`make engines` started: a PostgreSQL database and a MongoDB (FerretDB) database per environment and
region, a Redis database number, the OpenSearch node (one node: index names are shared across
regions, see docs/deploy.md). The audit store is a PostgreSQL database of its own. A connection
already in the caller's environment wins, so a test or a user points a region anywhere.

usage: cluster_connections.py SPECS PREFIX PG_URL REDIS_URL FIRST_REDIS_DB LAST_REDIS_DB [MONGO_URL] [SEARCH_URL]
Prints the exports, and the PostgreSQL databases to create as ``# database NAME`` lines (comments to
the shell that sources the output).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

from polymigrate.audit import AUDIT_CONN_ID
from polymigrate.connections import env_var
from polymigrate.spec.loader import load_project


def main(argv: list[str]) -> int:
    specs, prefix, pg_url, redis_url, first_db, last_db, *rest = argv
    mongo_url = rest[0] if rest else ""
    search_url = rest[1] if len(rest) > 1 else ""
    project = load_project(Path(specs).resolve())
    pg, rd = urlsplit(pg_url), urlsplit(redis_url)
    out: dict[str, dict] = {}
    databases = [f"{prefix}_audit"]
    out[env_var(AUDIT_CONN_ID)] = {"conn_type": "postgres", "host": pg.hostname, "port": pg.port,
                                   "login": pg.username or "postgres", "schema": f"{prefix}_audit"}
    redis_db = int(first_db)
    for env_name in sorted(project.environments):
        env = project.environments[env_name]
        for region in env.regions:
            db = f"{prefix}_{env_name}_{region}"
            databases.append(db)
            conns = {"postgresql": {"conn_type": "postgres", "host": pg.hostname, "port": pg.port,
                                    "login": pg.username or "postgres", "schema": db}}
            if redis_db <= int(last_db):
                conns["redis"] = {"conn_type": "redis", "host": rd.hostname, "port": rd.port, "extra": {"db": redis_db}}
                redis_db += 1
            if mongo_url:
                m = urlsplit(mongo_url)
                conns["mongodb"] = {"conn_type": "mongo", "host": m.hostname, "port": m.port, "schema": db}
            if search_url:
                s = urlsplit(search_url)
                conns["elasticsearch"] = {"conn_type": "opensearch", "host": s.hostname, "port": s.port,
                                          "schema": s.scheme or "http"}
            for tech, conn in conns.items():
                out[env_var(env.connection_id(region, tech))] = conn
    for name in databases:
        print(f"# database {name}")
    for var, conn in out.items():
        value = os.environ.get(var) or json.dumps(conn)
        print(f"export {var}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
