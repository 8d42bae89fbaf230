"""P6 (issue 24): a no-op ``dag.test()`` run of social-commerce in development on the four real
engines (PostgreSQL, the MongoDB-protocol server, Redis, OpenSearch), after one run applied
everything, beside a DAG of EmptyOperators with the same task ids, groups and edges (built from
the polymigrate DAG itself), run the same way in the same process. Prints figures; asserts nothing.

    .venv/bin/python bench/bench_noop_run.py [--repeat 3] [--profile FILE] [--per-task]

Each engine gets fresh names of its own (PostgreSQL databases, MongoDB databases, Redis DB
numbers 13 and 14, an OpenSearch prefix and ledger), dropped at the end. ``north_africa`` has no
OpenSearch target: this machine has one node, and two regions on one ledger are refused at plan.
``--profile FILE`` writes a cProfile of one more no-op run (``python -m pstats FILE``).
``--per-task`` runs each DAG once more and prints, per task id, its wall and CPU time (the whole
task as ``dag.test()`` runs it: Airflow's supervisor, execution API and XComs included) side by
side: what each polymigrate task costs beyond the EmptyOperator with its id.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
REGIONS = {"western_europe": 13, "north_africa": 14}  # region -> Redis DB number
DOMAINS = ("common", "social-commerce")


def prepare_specs(specs: Path, search, ferretdb: bool) -> None:
    shutil.copytree(ROOT / "migration_specs", specs, ignore=shutil.ignore_patterns("__pycache__"))
    for p in specs.iterdir():
        if p.is_dir() and p.name not in ("environments", *DOMAINS):
            shutil.rmtree(p)
    for env in (specs / "environments").glob("*.yaml"):
        if not env.name.startswith("_") and env.stem != "development":
            env.unlink()
    (specs / "environments" / "development.yaml").write_text(
        "regions:\n  western_europe: {}\n  north_africa:\n    technologies: [postgresql, mongodb, redis]\n"
        "policy:\n  approvals: {required: 0}\n  rollout: {strategy: parallel}\n  lint_block_at: critical\n"
        "  retries: 0\n")
    domain = specs / "social-commerce" / "domain.yaml"
    domain.write_text(domain.read_text().replace("    database: social_commerce\n", "").replace(
        "  elasticsearch:\n", f"  elasticsearch:\n    ledger: \"{search.ledger}\"\n"))
    for f in (specs / "social-commerce" / "elasticsearch").glob("*.json"):
        f.write_text(f.read_text().replace('"people_v1"', f'"{search.prefix}people_v1"').replace(
            '"alias": "people"', f'"alias": "{search.prefix}people"'))
    suite = specs / "social-commerce" / "expectations" / "people.yaml"  # the suite follows the renamed alias
    suite.write_text(suite.read_text().replace("object: people\n", f"object: {search.prefix}people\n"))
    if ferretdb:  # its collMod files run on a real MongoDB only; the demo and the e2e tests leave them out too
        for name in ("4-require-posts-schema-version-2.json", "5-activity-feed-validator-and-expiry.json"):
            (specs / "social-commerce" / "mongodb" / "collections" / name).unlink()
        # ... and the 90-day retention verify checks is the TTL index the second of them creates
        domain.write_text(domain.read_text().replace(
            "mongodb:activity_feed.user_id: {kind: pii, level: low, retention: 90d}",
            "mongodb:activity_feed.user_id: {kind: pii, level: low}"))


SHAPE = """
from datetime import datetime
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, TaskGroup

TASKS = {tasks!r}  # (full task id, group, trigger rule, upstream full ids): the polymigrate DAG's


def nothing():
    pass


def task(**kw):
    return EmptyOperator(**kw) if {empty!r} else PythonOperator(python_callable=nothing, **kw)


with DAG(dag_id="{prefix}__{dag_id}", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
    groups, ops = {{}}, {{}}
    for tid, group, rule, _ in TASKS:
        if group and group not in groups:
            groups[group] = TaskGroup(group)
        ops[tid] = task(task_id=tid.rpartition(".")[2], task_group=groups.get(group), trigger_rule=rule)
    for tid, _, _, upstream in TASKS:
        for up in upstream:
            ops[up] >> ops[tid]
"""


def write_same_shape(dag, folder: Path, *, empty: bool = True) -> Path:
    """A DAG file of EmptyOperators (else PythonOperators calling a function that does nothing) with the
    polymigrate DAG's task ids, groups, trigger rules and edges (dag.test() serializes a DAG from its
    DAG file, so the contender needs one too)."""
    tasks = [(tid, t.task_group.group_id if t.task_group and t.task_group.group_id else None,
              str(t.trigger_rule.value if hasattr(t.trigger_rule, "value") else t.trigger_rule),
              sorted(t.upstream_task_ids)) for tid, t in dag.task_dict.items()]
    path = folder / ("same_shape.py" if empty else "same_shape_python.py")
    path.write_text(SHAPE.format(tasks=tasks, dag_id=dag.dag_id, empty=empty,
                                 prefix="shape_of" if empty else "python_shape_of"))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", type=Path, help="write a cProfile of one more no-op run here")
    ap.add_argument("--profile-clock", choices=("wall", "cpu"), default="wall",
                    help="what the profile counts: wall time, or this process's CPU time (waits on the engines left out)")
    ap.add_argument("--per-task", action="store_true", help="print each task's wall and CPU time, both DAGs")
    ap.add_argument("--airflow", action="store_true", help="run both DAGs on an airflow standalone instead of dag.test()")
    ap.add_argument("--no-preload", action="store_true", help="with --airflow: tasks forked as Airflow does by default "
                    "(fork from the scheduler, no polymigrate_airflow.preload)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="pm-bench-noop-"))
    for k in [k for k in os.environ if k.startswith("AIRFLOW_CONN_")]:
        del os.environ[k]
    os.environ.update({"AIRFLOW_HOME": str(home / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                       "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                       "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
                       "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"})
    sys.path[:0] = [str(ROOT), str(ROOT / "include"), str(ROOT / "plugins")]
    import psycopg
    import pymongo
    import redis
    from psycopg import sql

    from tests.conftest import MONGO_URI, OPENSEARCH_URL, PG_ADMIN_URL, REDIS_URL, SearchTarget, mongo_url_for

    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], check=True,
                   capture_output=True, env=os.environ.copy())
    search = SearchTarget("opensearch", OPENSEARCH_URL)
    specs = home / "specs"
    from polymigrate.adapters.mongodb.server import server_info

    probe = pymongo.MongoClient(MONGO_URI, serverSelectionTimeoutMS=5000)
    ferretdb = server_info(probe).is_ferretdb
    probe.close()
    prepare_specs(specs, search, ferretdb)
    (home / "dags").mkdir()
    shutil.copy(ROOT / "dags" / "polymigrate_dags.py", home / "dags")
    os.environ["POLYMIGRATE_SPECS"] = str(specs)
    pg_dbs, mongo_dbs, redis_clients = [], [], []
    es = urlsplit(search.url)
    host, _, port = REDIS_URL.removeprefix("redis://").partition(":")
    base = PG_ADMIN_URL.rpartition("/")[0]
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for region in REGIONS:
                pg_dbs.append(f"pm_noop_{uuid.uuid4().hex[:10]}")
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pg_dbs[-1])))
        for (region, db), pg_db in zip(REGIONS.items(), pg_dbs):
            mongo_dbs.append(f"pm_noop_{uuid.uuid4().hex[:10]}")
            m = urlsplit(mongo_url_for(mongo_dbs[-1]))
            conns = {
                "POSTGRESQL": f"{base}/{pg_db}",
                "MONGODB": json.dumps({"conn_type": "mongo", "host": m.hostname, "port": m.port, "schema": m.path[1:]}),
                "REDIS": json.dumps({"conn_type": "redis", "host": host, "port": int(port or 6379), "extra": {"db": db}}),
                "ELASTICSEARCH": json.dumps({"conn_type": "opensearch", "host": es.hostname, "port": es.port,
                                             "schema": es.scheme}),
            }
            for tech, value in conns.items():
                os.environ[f"AIRFLOW_CONN_POLYMIGRATE_{tech}_DEVELOPMENT_{region.upper()}"] = value
            redis_clients.append(redis.Redis.from_url(f"{REDIS_URL}/{db}"))
            redis_clients[-1].flushdb()
        if args.airflow:
            metadata = f"pm_noop_{uuid.uuid4().hex[:10]}"
            pg_dbs.append(metadata)
            with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(metadata)))
            on_airflow(args, home, f"{base}/{metadata}")
        else:
            run(args)
    finally:
        for c in redis_clients:
            c.flushdb()
            c.close()
        client = pymongo.MongoClient(MONGO_URI, serverSelectionTimeoutMS=5000)
        for name in mongo_dbs:
            client.drop_database(name)
        client.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            for name in pg_dbs:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        search.cleanup()
        shutil.rmtree(home, ignore_errors=True)


def run(args) -> None:
    from polymigrate_airflow.renderer import build_dags

    specs = os.environ["POLYMIGRATE_SPECS"]
    dags = build_dags(specs)
    for dag_id in ("migrate__common__development", "migrate__social_commerce__development"):
        dr = dags[dag_id].test()
        states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
        if dr.state != "success":
            raise SystemExit(f"the first run of {dag_id} did not succeed: {states}")
    dag = dags["migrate__social_commerce__development"]
    import runpy

    empty = runpy.run_path(str(write_same_shape(dag, Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]))))["dag"]
    print(f"social-commerce in development: {len(dag.tasks)} tasks, {len(REGIONS)} regions, four engines; "
          f"after one run applied everything; median of {args.repeat}, alternating")
    times = {"polymigrate (no-op)": [], "same shape (EmptyOperators)": []}
    for _ in range(args.repeat):
        for label, d in (("polymigrate (no-op)", dag), ("same shape (EmptyOperators)", empty)):
            t = time.perf_counter()
            dr = d.test()
            times[label].append(time.perf_counter() - t)
            if dr.state != "success":
                raise SystemExit(f"{d.dag_id} did not succeed: {[(ti.task_id, ti.state) for ti in dr.get_task_instances()]}")
    for label, ts in times.items():
        print(f"{label:30} median {statistics.median(ts):6.2f} s   runs {' '.join(f'{t:.2f}' for t in ts)}")
    ratio = statistics.median(times["polymigrate (no-op)"]) / statistics.median(times["same shape (EmptyOperators)"])
    # each round's pair ran back to back: their ratio is steadier than one of medians taken at different
    # moments on a VM whose CPU speed moves within a minute
    paired = statistics.median(p / e for p, e in zip(times["polymigrate (no-op)"], times["same shape (EmptyOperators)"]))
    print(f"ratio {ratio:.2f}× of medians, {paired:.2f}× median of the rounds' ratios (goal ≤ 1.2×)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.per_task:
        per_task(dag, empty)
    if args.profile:
        import cProfile

        prof = cProfile.Profile(time.process_time) if args.profile_clock == "cpu" else cProfile.Profile()
        prof.runcall(dag.test)
        prof.dump_stats(str(args.profile))
        print(f"profile ({args.profile_clock} time) of one more no-op run: {args.profile}")


def on_airflow(args, home: Path, metadata: str) -> None:
    """``--airflow``: both DAGs on a standalone Airflow, triggered and followed through its REST API."""
    from datetime import datetime

    from polymigrate_airflow.renderer import build_dags
    from scripts import airflow_local as local
    from tests.conftest import _machine_cpu  # (busy, total) CPU seconds of the machine since boot

    dag = build_dags(os.environ["POLYMIGRATE_SPECS"])["migrate__social_commerce__development"]
    write_same_shape(dag, home / "dags")
    write_same_shape(dag, home / "dags", empty=False)
    extra = {k: v for k, v in os.environ.items() if k.startswith(("AIRFLOW_CONN_", "POLYMIGRATE_"))}
    if args.no_preload:
        extra.update(AIRFLOW__SCHEDULER__MP_START_METHOD="", AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD="")
    env = local.airflow_env(home / "standalone", local.free_port(), dags_folder=home / "dags",
                            metadata_url=metadata.replace("postgresql://", "postgresql+psycopg2://"),
                            users={"admin": "bench"}, extra=extra)
    log = home / "standalone.log"
    proc = local.start([local.AIRFLOW, "standalone"], env, log)
    try:
        api = local.Client(env["AIRFLOW__API__BASE_URL"], proc=proc, log=log, interval=0.2)
        local.wait_healthy(api.base, 600, proc=proc, log=log)
        api.login("admin", "bench")
        shape, python_shape = f"shape_of__{dag.dag_id}", f"python_shape_of__{dag.dag_id}"
        for d in ("migrate__common__development", dag.dag_id, shape, python_shape):
            api.unpause(d)

        by_component: dict[str, list[Counter]] = {label: [] for label in ("polymigrate (no-op)",
                                                                          "same shape (no-op PythonOperators)")}

        def one(dag_id: str, label: str | None = None) -> tuple[float, float]:
            cpu, parts = _machine_cpu()[0], component_cpu(proc)
            run_id = api.start_run(None, dag_id)
            state = api.wait(f"{dag_id} {run_id} to end", lambda: api.ended_state(dag_id, run_id), 900)
            used = _machine_cpu()[0] - cpu
            if label in by_component:
                after = component_cpu(proc)
                by_component[label].append(Counter({k: after[k] - parts.get(k, 0) for k in after}))
            if state != "success":
                raise SystemExit(f"{dag_id} {run_id}: {state}; see {log} and the task logs under {home}")
            r = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")[1]
            took = (datetime.fromisoformat(r["end_date"]) - datetime.fromisoformat(r["start_date"])).total_seconds()
            return took, used

        one("migrate__common__development")
        one(dag.dag_id)  # applies everything: what follows are no-op runs
        # Airflow's scheduler marks an EmptyOperator done without running it: no process, no worker.
        # A PythonOperator calling a function that does nothing is what any real task costs at least.
        contenders = {"polymigrate (no-op)": dag.dag_id, "same shape (EmptyOperators)": shape,
                      "same shape (no-op PythonOperators)": python_shape}
        times = {label: [] for label in contenders}
        for _ in range(args.repeat):
            for label, dag_id in contenders.items():
                times[label].append(one(dag_id, label))
        print(f"social-commerce in development on airflow standalone (LocalExecutor, parallelism "
              f"{env['AIRFLOW__CORE__PARALLELISM']}, tasks forked from "
              f"{'the scheduler' if args.no_preload else 'a forkserver that preloaded polymigrate'}): "
              f"{len(dag.tasks)} tasks; median of {args.repeat}, alternating")
        for label, ts in times.items():
            print(f"{label:36} run {statistics.median(t for t, _ in ts):6.2f} s   machine CPU "
                  f"{statistics.median(c for _, c in ts):6.2f} s   runs {' '.join(f'{t:.1f}' for t, _ in ts)}")
        pm = times["polymigrate (no-op)"]
        for label in list(contenders)[1:]:
            other = times[label]
            print(f"polymigrate ÷ {label}, median of the rounds: run "
                  f"{statistics.median(p[0] / e[0] for p, e in zip(pm, other)):.2f}×, machine CPU "
                  f"{statistics.median(p[1] / e[1] for p, e in zip(pm, other)):.2f}× (goal ≤ 1.2×)")
        print("CPU s of each of Airflow's processes (tasks and their workers included), median of the rounds:")
        for label, rounds in by_component.items():
            names = sorted({k for r in rounds for k in r}, key=lambda k: -statistics.median(r[k] for r in rounds))
            print(f"  {label:36} " + "  ".join(f"{k} {statistics.median(r[k] for r in rounds):.2f}" for k in names))
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        local.stop(proc, port=int(env["AIRFLOW__API__PORT"]))


def component_cpu(proc) -> Counter:
    """CPU seconds so far of each process of the standalone started as ``proc``, by kind as
    bench_suite_cpu.py names them (a task's process counts in its LocalExecutor worker's figure once
    the worker has waited for it)."""
    import psutil

    from bench.bench_suite_cpu import kind

    out: Counter = Counter()
    root = psutil.Process(proc.pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            cmd, t = " ".join(p.cmdline()), p.cpu_times()
        except psutil.Error:
            continue
        out[kind(cmd)] += t.user + t.system + t.children_user + t.children_system
    return out


def per_task(dag, empty) -> None:
    """One more run of each DAG, timing every task as dag.test() runs it (``_run_task``: the
    in-process supervisor, the execution API, the task, its XCom push). CPU is the process's, which
    is the task's: dag.test() runs one task at a time."""
    from airflow.sdk.definitions import dag as dag_module

    inner, spent = dag_module._run_task, {}

    def timed(*, ti, task, **kw):
        w, c = time.perf_counter(), time.process_time()
        try:
            return inner(ti=ti, task=task, **kw)
        finally:
            spent[(task.dag_id, ti.task_id)] = (time.perf_counter() - w, time.process_time() - c)

    dag_module._run_task = timed
    try:
        totals = {}
        for d in (dag, empty):
            w, c = time.perf_counter(), time.process_time()
            d.test()
            totals[d.dag_id] = (time.perf_counter() - w, time.process_time() - c)
    finally:
        dag_module._run_task = inner
    print(f"\nper task, one more run of each (ms): {'task':38} {'wall':>7} {'cpu':>7}   {'empty wall':>10} {'cpu':>7}")
    rows = [(tid, spent.get((dag.dag_id, tid), (0, 0)), spent.get((empty.dag_id, tid), (0, 0)))
            for tid in dag.task_dict]
    for tid, (pw, pc), (ew, ec) in sorted(rows, key=lambda r: -r[1][1]):
        print(f"{'':35} {tid:38} {pw * 1e3:7.0f} {pc * 1e3:7.0f}   {ew * 1e3:10.0f} {ec * 1e3:7.0f}")
    for label, d in (("sum of tasks", None), ("whole run", "run")):
        if d is None:
            p = [sum(x[1][i] for x in rows) for i in (0, 1)]
            e = [sum(x[2][i] for x in rows) for i in (0, 1)]
        else:
            p, e = totals[dag.dag_id], totals[empty.dag_id]
        print(f"{'':35} {label:38} {p[0] * 1e3:7.0f} {p[1] * 1e3:7.0f}   {e[0] * 1e3:10.0f} {e[1] * 1e3:7.0f}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
