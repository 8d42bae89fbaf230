"""Lint time against the number of statements in one file (issue 14, item 7: it grew with the square).

Generates a schema-dump-like PostgreSQL migration (tables, indexes, constraints, comments, grants,
seed rows) of 4,587 statements, and smaller ones, and times ``lint_file`` on each: the current code,
and the code of ``--baseline`` (a git revision, default the commit before the fix) run from a copy
of its ``include/`` in a separate process. CPU seconds of the process are shown (a busy shared
machine inflates wall time far more), with wall time in brackets. Prints figures side by side;
asserts nothing.

    .venv/bin/python bench/bench_lint_scale.py [--statements 4587] [--baseline 10b9083] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, statistics, sys, time
from pathlib import Path
from polymigrate.catalog import load_file
from polymigrate.lint import lint_file
folder, repeat = Path(sys.argv[1]), int(sys.argv[2])
out = {}
for path in sorted(folder.glob("V*.sql")):
    mig, problems, _ = load_file("bench", "postgresql", folder, path)
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        report = lint_file(mig)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out[path.name] = {"s": statistics.median(times), "cpu": statistics.median(cpu), "findings": len(report.findings)}
print(json.dumps(out))
"""


def schema_dump(n: int) -> str:
    """About ``n`` statements: per table a CREATE TABLE, two indexes, a constraint, a comment, a grant
    and a few seed rows, as a dumped schema looks."""
    out: list[str] = []
    t = 0
    while len(out) < n:
        t += 1
        out += [
            f"CREATE TABLE t{t} (id bigint PRIMARY KEY, owner_id bigint, name text, note varchar(80), "
            f"created_at timestamptz DEFAULT now())",
            f"CREATE INDEX t{t}_owner ON t{t} (owner_id)",
            f"CREATE INDEX t{t}_name ON t{t} (lower(name))",
            f"ALTER TABLE t{t} ADD CONSTRAINT t{t}_name_len CHECK (char_length(name) < 200)",
            f"COMMENT ON TABLE t{t} IS 'table {t}'",
            f"GRANT SELECT ON t{t} TO app_ro",
            f"INSERT INTO t{t} (id, owner_id, name) VALUES (1, 1, 'a'), (2, 1, 'b')",
            f"UPDATE t{t} SET note = 'seed' WHERE id = 1",
            f"ALTER TABLE t{t} ALTER COLUMN note SET DEFAULT ''",
        ]
    return ";\n".join(out[:n]) + ";\n"


def measure(pythonpath: str, folder: Path, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder), str(repeat)], capture_output=True, text=True,
                         env=env, timeout=3600)
    if out.returncode:
        raise SystemExit(f"probe failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--statements", type=int, default=4587)
    ap.add_argument("--baseline", default="10b9083", help="git revision to compare with ('' to skip)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pm-bench-lint-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "sql"
        folder.mkdir()
        sizes = sorted({max(args.statements // 8, 1), args.statements // 4, args.statements // 2, args.statements})
        for k, n in enumerate(sizes, 1):
            (folder / f"V{k}__dump_{n}.sql").write_text(schema_dump(n))
        contenders = {"current": str(ROOT / "include")}
        if args.baseline:
            old = tmp / "baseline"
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "include"],
                                     capture_output=True)
            if archive.returncode == 0:
                old.mkdir()
                subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
                contenders[f"baseline {args.baseline}"] = str(old / "include")
            else:
                print(f"(baseline {args.baseline} not found: {archive.stderr.decode().strip()})")
        results = {name: measure(path, folder, args.repeat) for name, path in contenders.items()}
        print(f"lint_file on one file of N statements (schema-dump mix), median of {args.repeat}")
        print(f"{'statements':>10} " + " ".join(f"{name + ' CPU s (wall)':>34}" for name in results) + "   ratio")
        for k, n in enumerate(sizes, 1):
            name = f"V{k}__dump_{n}.sql"
            cells = [results[c][name] for c in results]
            ratio = f"{cells[-1]['cpu'] / cells[0]['cpu']:6.1f}x" if len(cells) > 1 and cells[0]["cpu"] else ""
            print(f"{n:>10} " + " ".join(f"{x['cpu']:>24.3f} ({x['s']:7.3f})" for x in cells) + f"   {ratio}")
        for c in results:
            per = [results[c][f"V{k}__dump_{n}.sql"]["cpu"] / n * 1e6 for k, n in enumerate(sizes, 1)]
            print(f"{c}: {', '.join(f'{p:.0f}' for p in per)} µs of CPU per statement (flat = linear)")


if __name__ == "__main__":
    main()
