"""P5: regions fanned out over Celery workers. The same release (one domain, PostgreSQL files that
create and fill a table each) runs on `make cluster`'s Airflow (CeleryExecutor, two workers) in an
environment of one region, then in an environment of four regions in parallel; each target its own
database. Prints the wall time of each run (the DAG run's start to end, as Airflow records it), the
ratio, and each worker's share of the tasks. Asserts nothing.

Target (issue 29): four regions ≤ 1.3× one region's wall time.

    .venv/bin/python bench/bench_cluster_fanout.py [--files 20] [--rows 20000] [--repeat 2]

Needs `make engines`; starts and stops its own cluster (scripts/cluster.sh, folder .bench-cluster/).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
REGIONS = ["western_europe", "eastern_europe", "north_africa", "sub_saharan_africa"]


def write_specs(root: Path, files: int, rows: int) -> None:
    (root / "environments").mkdir(parents=True)
    for env, regions in (("one", REGIONS[:1]), ("four", REGIONS)):
        (root / "environments" / f"{env}.yaml").write_text(
            "regions:\n" + "".join(f"  {r}: {{}}\n" for r in regions)
            + "technologies: [postgresql]\npolicy:\n  rollout: {strategy: parallel}\n  lint_block_at: critical\n")
    pg = root / "bench" / "postgresql"
    pg.mkdir(parents=True)
    (root / "bench" / "domain.yaml").write_text("description: fan-out bench\nowners: [bench@example.com]\n"
                                                "technologies: {postgresql: {schema: bench}}\n")
    for v in range(1, files + 1):
        (pg / f"V{v}__fill_{v}.sql").write_text(
            f"CREATE TABLE t{v} (id bigint PRIMARY KEY, payload text NOT NULL);\n"
            f"INSERT INTO t{v} SELECT g, md5(g::text) FROM generate_series(1, {rows}) g;\n")


def env_values(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        for name, value in re.findall(r"(\w+)=('[^']*'|\S+)", line.removeprefix("export ")):
            out[name] = value.strip("'")
    return out


def run(api: httpx.Client, dag: str) -> tuple[float, collections.Counter]:
    deadline = time.monotonic() + 120
    while api.get(f"/api/v2/dags/{dag}").status_code != 200:
        if time.monotonic() > deadline:
            sys.exit(f"{dag} was never parsed")
        time.sleep(1)
    run_id = api.post(f"/api/v2/dags/{dag}/dagRuns", json={"logical_date": None, "conf": {}}).json()["dag_run_id"]
    while True:
        body = api.get(f"/api/v2/dags/{dag}/dagRuns/{run_id}").json()
        if body["state"] in ("success", "failed"):
            break
        time.sleep(1)
    if body["state"] != "success":
        sys.exit(f"{dag} {run_id} failed")
    wall = (datetime.fromisoformat(body["end_date"]) - datetime.fromisoformat(body["start_date"])).total_seconds()
    tis = api.get(f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances?limit=200").json()["task_instances"]
    return wall, collections.Counter(t["hostname"] for t in tis if t["hostname"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="polymigrate-bench-fanout-"))
    write_specs(tmp / "specs", args.files, args.rows)
    home = ROOT / ".bench-cluster"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(POLYMIGRATE_SPECS=str(tmp / "specs"), POLYMIGRATE_CLUSTER_DIR=str(home),
               POLYMIGRATE_CLUSTER_DB_PREFIX="pm_bench_fanout", POLYMIGRATE_CLUSTER_BROKER_DB="28",
               POLYMIGRATE_CLUSTER_REDIS_DBS="16 19")
    cluster = ["bash", str(ROOT / "scripts" / "cluster.sh")]
    started = time.monotonic()
    subprocess.run([*cluster, "up"], env=env, check=True)
    up_seconds = time.monotonic() - started
    try:
        info = env_values(home / "env")
        token = httpx.post(f"{info['AIRFLOW_URL']}/auth/token", json={"username": info["AIRFLOW_ADMIN_USER"],
                           "password": info["AIRFLOW_ADMIN_PASSWORD"]}, timeout=60).json()["access_token"]
        api = httpx.Client(base_url=info["AIRFLOW_URL"], headers={"Authorization": f"Bearer {token}"}, timeout=120)
        figures: dict[str, list[float]] = {"one": [], "four": []}
        shares: collections.Counter = collections.Counter()
        for n in range(args.repeat):
            for env_name in ("one", "four"):
                if n:  # the same release again: empty targets, so every file applies
                    subprocess.run([*cluster, "reset-targets"], env=env, check=True, capture_output=True)
                wall, hosts = run(api, f"migrate__bench__{env_name}")
                figures[env_name].append(wall)
                if env_name == "four":
                    shares.update(hosts)
    finally:
        subprocess.run([*cluster, "down"], env=env, check=False, capture_output=True)
    one, four = statistics.median(figures["one"]), statistics.median(figures["four"])
    print(f"\nP5 regions fanned out over two Celery workers ({args.files} files × {args.rows} rows per region, "
          f"median of {args.repeat}; cluster up in {up_seconds:.0f} s; load {os.getloadavg()[0]:.1f})")
    print(f"{'run':<28}{'wall s':>10}{'× one region':>15}")
    print(f"{'one region':<28}{one:>10.1f}{1.0:>15.2f}")
    print(f"{'four regions in parallel':<28}{four:>10.1f}{four / one:>15.2f}")
    total = sum(shares.values())
    for host, count in sorted(shares.items()):
        print(f"  {host}: {count} of {total} tasks of the four-region runs ({100 * count / total:.0f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
