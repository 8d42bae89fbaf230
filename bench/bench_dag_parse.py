"""DAG parse time: 200 polymigrate DAGs (50 domains × 4 environments, 500 migrations each)
beside 200 trivial DAGs and 200 EmptyOperator DAGs of the same shape, each parsed by Airflow's
DagBag in a fresh process after Airflow's own import. Prints figures; asserts nothing.

Target (issue 4): polymigrate's parse ≤ 2 s beyond Airflow's own import, with no database or
network I/O (the generated tree has no connection configured, and parse reads no migration file).
"a task's parse" is the same file parsed as a task process parses it, Airflow's parsing context
naming one DAG: it builds that DAG alone (every task of every run pays this parse).

    .venv/bin/python bench/bench_dag_parse.py [--domains 50] [--migrations 500] [--repeat 3] [--before TREE]

``--before TREE`` adds a row for another checkout's polymigrate (e.g. ``git worktree add /tmp/before
HEAD~3``: its include/ and plugins/ first on PYTHONPATH), so a change is measured beside what it
replaces in the same run and under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REGIONS = ["western_europe", "eastern_europe", "north_africa", "sub_saharan_africa"]
ENVIRONMENTS = {"development": "parallel", "testing": "parallel", "staging": "sequential", "production": "canary"}


def generate_specs(root: Path, domains: int, migrations: int) -> None:
    env_dir = root / "environments"
    env_dir.mkdir(parents=True)
    for env, strategy in ENVIRONMENTS.items():
        canary = "\n    canary_region: western_europe" if strategy == "canary" else ""
        (env_dir / f"{env}.yaml").write_text(
            "regions:\n" + "".join(f"  {r}: {{}}\n" for r in REGIONS)
            + f"policy:\n  rollout:\n    strategy: {strategy}{canary}\n")
    for d in range(domains):
        dom = root / f"domain-{d:02d}"
        (dom / "postgresql" / "tables").mkdir(parents=True)
        (dom / "redis").mkdir()
        (dom / "domain.yaml").write_text(
            f"description: generated domain {d}\nowners: [team-{d}@example.com]\n"
            "technologies: {postgresql: {schema: s" + str(d) + "}, redis: {key_prefix: 'd" + str(d) + ":'}}\n")
        pg = migrations * 4 // 5
        for v in range(1, pg + 1):
            (dom / "postgresql" / "tables" / f"V{v}__step_{v}.sql").write_text(f"CREATE TABLE t{v} (id int);\n")
        for v in range(1, migrations - pg + 1):
            (dom / "redis" / f"{v}-step-{v}.lua").write_text("return 0\n")


TRIVIAL = """
from datetime import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
for i in range({n}):
    with DAG(dag_id=f"trivial_{{i}}", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
        EmptyOperator(task_id="noop")
    globals()[dag.dag_id] = dag
"""

SAME_SHAPE = """
from datetime import datetime
from airflow.sdk import DAG, TaskGroup
from airflow.providers.standard.operators.empty import EmptyOperator
for i in range({n}):
    with DAG(dag_id=f"shaped_{{i}}", schedule=None, start_date=datetime(2024, 1, 1)) as dag:
        prev = EmptyOperator(task_id="validate") >> EmptyOperator(task_id="approve") >> EmptyOperator(task_id="plan")
        for r in {regions!r}:
            with TaskGroup(r):
                prev >> EmptyOperator(task_id="postgresql") >> EmptyOperator(task_id="redis") >> EmptyOperator(task_id="verify")
    globals()[dag.dag_id] = dag
"""

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk  # noqa: F401
from airflow.dag_processing.dagbag import DagBag
t1, c1 = time.perf_counter(), time.process_time()
bag = DagBag(dag_folder=sys.argv[1])
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"import_s": t1 - t0, "parse_s": t2 - t1, "cpu_s": c2 - c1, "dags": len(bag.dags),
                  "tasks": sum(len(d.tasks) for d in bag.dags.values()), "errors": len(bag.import_errors)}))
"""


def probe(dag_file: Path, env: dict, tree: Path | None = None) -> dict:
    if tree is not None:
        env = {**env, "PYTHONPATH": f"{tree / 'include'}{os.pathsep}{tree / 'plugins'}"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(dag_file)], capture_output=True, text=True, env=env)
    if out.returncode:
        raise SystemExit(f"probe failed for {dag_file}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--domains", type=int, default=50)
    ap.add_argument("--migrations", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", type=Path, help="another checkout of polymigrate, parsed beside this one")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="pm-bench-parse-") as tmp:
        tmp = Path(tmp)
        specs = tmp / "specs"
        generate_specs(specs, args.domains, args.migrations)
        n = args.domains * len(ENVIRONMENTS)
        files = {
            "trivial (1 EmptyOperator)": tmp / "trivial.py",
            "same shape (EmptyOperators)": tmp / "shaped.py",
            "polymigrate": ROOT / "dags" / "polymigrate_dags.py",
            # what a task process parses: Airflow's task runner names the DAG it runs (parsing context)
            "polymigrate, a task's parse": ROOT / "dags" / "polymigrate_dags.py",
        }
        trees = {}
        contexts = {"polymigrate, a task's parse": {"_AIRFLOW_PARSING_CONTEXT_DAG_ID": "migrate__domain_07__staging",
                                                    "_AIRFLOW_PARSING_CONTEXT_TASK_ID": "plan"}}
        if args.before:
            files["polymigrate (--before)"] = args.before.resolve() / "dags" / "polymigrate_dags.py"
            trees["polymigrate (--before)"] = args.before.resolve()
            files["polymigrate (--before), a task's parse"] = files["polymigrate (--before)"]
            trees["polymigrate (--before), a task's parse"] = args.before.resolve()
            contexts["polymigrate (--before), a task's parse"] = contexts["polymigrate, a task's parse"]
        files["trivial (1 EmptyOperator)"].write_text(textwrap.dedent(TRIVIAL.format(n=n)))
        files["same shape (EmptyOperators)"].write_text(textwrap.dedent(SAME_SHAPE.format(n=n, regions=REGIONS)))
        home = tmp / "airflow"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
        env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                    "POLYMIGRATE_SPECS": str(specs), "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR"})
        print(f"{args.domains} domains × {len(ENVIRONMENTS)} environments = {n} DAGs, "
              f"{args.migrations} migrations per domain, {len(REGIONS)} regions, median of {args.repeat} fresh processes")
        print(f"{'DAG file':40} {'dags':>5} {'tasks':>6} {'airflow import s':>17} {'parse s':>8} {'parse CPU s':>12}")
        runs: dict[str, list[dict]] = {label: [] for label in files}
        for _ in range(args.repeat):  # round-robin, so a burst of load from elsewhere hits every contender alike
            for label, path in files.items():
                runs[label].append(probe(path, {**env, **contexts.get(label, {})}, trees.get(label)))
        results = {}
        for label, rs in runs.items():
            med = {k: statistics.median(r[k] for r in rs) for k in ("import_s", "parse_s", "cpu_s")}
            r = rs[-1]
            results[label] = med["parse_s"]
            print(f"{label:40} {r['dags']:>5} {r['tasks']:>6} {med['import_s']:>17.2f} {med['parse_s']:>8.2f} "
                  f"{med['cpu_s']:>12.2f}" + (f"  ({r['errors']} import errors)" if r["errors"] else ""))
        extra = results["polymigrate"] - results["trivial (1 EmptyOperator)"]
        print(f"polymigrate beyond Airflow's import: {results['polymigrate']:.2f} s (target ≤ 2 s); "
              f"{extra:+.2f} s vs trivial DAGs, "
              f"{results['polymigrate'] - results['same shape (EmptyOperators)']:+.2f} s vs same-shape EmptyOperator DAGs; "
              f"{results['polymigrate'] / results['same shape (EmptyOperators)']:.2f}× the same-shape DAGs")
        # each round parses every file back to back: its ratio holds better than one of medians taken at
        # different moments on a VM whose CPU speed moves within a minute
        paired = statistics.median(p["parse_s"] / e["parse_s"]
                                   for p, e in zip(runs["polymigrate"], runs["same shape (EmptyOperators)"]))
        print(f"median of the rounds' ratios to the same-shape DAGs: {paired:.2f}×")
        if args.before:
            print(f"--before {args.before}: {results['polymigrate (--before)']:.2f} s = "
                  f"{results['polymigrate (--before)'] / results['same shape (EmptyOperators)']:.2f}× the same-shape DAGs")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
