"""Where a command's CPU goes, by kind of process: every process on the machine sampled while it runs.

Issue 25: the suite is CPU-bound on two cores, and the per-module figures the test run prints count
only the test processes and the children they waited for; Airflow's daemons, the engines' servers and
processes killed by a process group never reach them. This samples ``/proc`` every ``--interval``
seconds and keeps each process's latest user+system time, so a process is counted up to its last
sample (one that lives less than an interval may be missed: compare the total with the machine's,
printed beside it). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_suite_cpu.py [--interval 3] -- make test
    .venv/bin/python bench/bench_suite_cpu.py -- .venv/bin/pytest -q -n 3 --dist loadfile tests/e2e
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")

# (pattern on the command line, kind); the first that matches names the kind
KINDS = [
    (r"(^|/)postgres[: ]", "PostgreSQL"),
    (r"api[-_]server", "Airflow API servers"),
    (r"airflow worker", "Airflow task processes"),  # the task supervisors LocalExecutor forks
    # LocalExecutor's forkserver (polymigrate_airflow.preload): before "polymigrate", which its command names
    (r"multiprocessing\.forkserver", "Airflow task processes"),
    (r"celery", "Airflow Celery workers"),
    (r"airflow scheduler", "Airflow schedulers"),
    (r"dag[-_]processor", "Airflow DAG processors"),
    (r"airflow triggerer", "Airflow triggerers"),
    (r"airflow (standalone|db migrate|serve-logs)", "Airflow standalone, db migrate, log servers"),
    (r"exec\(eval\(sys\.stdin", "pytest-xdist workers"),
    (r"pytest", "pytest"),
    (r"polymigrate", "polymigrate CLI"),
    (r"ferretdb", "FerretDB"),
    (r"opensearch", "OpenSearch"),
    (r"redis-server", "Redis"),
    (r"chrom", "Chromium"),
    (r"node", "Node"),
    (r"java", "other Java (Flyway)"),
]


def kind(cmdline: str) -> str:
    for pattern, name in KINDS:
        if re.search(pattern, cmdline):
            return name
    return "other"


def machine_cpu() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / HZ  # all but idle and iowait


def sample(seen: dict[tuple[int, int], list]) -> None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            rest = stat[stat.rfind(")") + 2:].split()
            key = (int(entry), int(rest[19]))  # pid and start time: a reused pid is another process
            cpu = (int(rest[11]) + int(rest[12])) / HZ
            if key not in seen:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
                if not cmdline:
                    continue  # a kernel thread
                seen[key] = [kind(cmdline), cpu]
            else:
                seen[key][1] = cpu
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=3.0)
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command to run, after --")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        ap.error("give the command to run after --, e.g. -- make test")

    seen: dict[tuple[int, int], list] = {}
    sample(seen)
    before = {key: cpu for key, (_, cpu) in seen.items()}  # what ran before the command is not its
    stop = threading.Event()

    def sampler():
        while not stop.wait(args.interval):
            sample(seen)

    thread = threading.Thread(target=sampler, daemon=True)
    started, machine0 = time.monotonic(), machine_cpu()
    thread.start()
    rc = subprocess.call(command)
    stop.set()
    thread.join()
    sample(seen)
    wall, machine = time.monotonic() - started, machine_cpu() - machine0

    per_kind: dict[str, list[float]] = {}
    for key, (name, cpu) in seen.items():
        used = cpu - before.get(key, 0.0)
        if used > 0:
            per_kind.setdefault(name, [0.0, 0])
            per_kind[name][0] += used
            per_kind[name][1] += 1
    seen_total = sum(v[0] for v in per_kind.values())
    print(f"\n{' '.join(command)}: exit {rc}, {wall:,.0f} s wall; the machine's CPU {machine:,.0f} s "
          f"({100 * machine / (wall * os.cpu_count()):.0f} % of {os.cpu_count()} cores), {seen_total:,.0f} s of it "
          f"seen in processes sampled every {args.interval:g} s")
    print(f"{'CPU s':>9} {'share':>6} {'procs':>6}  kind")
    for name, (cpu, n) in sorted(per_kind.items(), key=lambda kv: -kv[1][0]):
        print(f"{cpu:9.1f} {100 * cpu / seen_total:5.1f}% {n:6d}  {name}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
