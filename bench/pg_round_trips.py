"""Round trips per file on the apply path: libpq's protocol trace of one run applying N generated files
(bench_postgres_apply's) to a fresh database, counted as client→server→client turns.

    .venv/bin/python bench/pg_round_trips.py [--files 60] [--url postgresql://…]   (default: $POLYMIGRATE_TEST_PG)

Runs twice (N and N/3 files) and prints the marginal figures per file, so the run's fixed cost
(lock, ledger creation and reads) is left out. Run it from another checkout to count what that one
does. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "include"))
sys.path.insert(0, str(HERE))

from bench_postgres_apply import fresh_db, generate  # noqa: E402
from polymigrate.adapters.postgresql.adapter import PostgresAdapter  # noqa: E402
from polymigrate.catalog import discover  # noqa: E402
from polymigrate.executor import migrate  # noqa: E402
from polymigrate.ledger import RunContext  # noqa: E402


def trace(admin: str, n: int) -> collections.Counter:
    """Message counts of one run of ``n`` files, and ``turns``: how often the client waited."""
    work = Path(tempfile.mkdtemp(prefix="pm_rt_"))
    generate(work / "sql", n)
    url, drop = fresh_db(admin)
    try:
        adapter = PostgresAdapter.from_url(url, domain="bench")
        with open(work / "trace", "w") as out:
            adapter.conn.pgconn.trace(out.fileno())
            migrate(adapter, discover("bench", "postgresql", work / "sql").applicable("postgresql"),
                    RunContext(domain="bench", actor="bench", run_id="bench"))
            adapter.conn.pgconn.untrace()
        adapter.close()
    finally:
        drop()
    counts: collections.Counter = collections.Counter()
    previous = None
    for line in (work / "trace").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 4 or not parts[3].split():
            continue
        direction, message = parts[1], parts[3].split()[0]
        counts[f"{direction} {message}"] += 1
        if direction == "B" and previous == "F":
            counts["turns"] += 1
        previous = direction
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--url", default=os.environ.get("POLYMIGRATE_TEST_PG"))
    args = ap.parse_args()
    if not args.url:
        raise SystemExit("--url or POLYMIGRATE_TEST_PG: an admin URL of a PostgreSQL server")
    small, large = args.files // 3, args.files
    a, b = trace(args.url, small), trace(args.url, large)
    per = lambda key: (b[key] - a[key]) / (large - small)  # noqa: E731
    print(f"per file (marginal, {small} vs {large} files of bench_postgres_apply):")
    print(f"  round trips (client waits)    {per('turns'):.2f}")
    print(f"  statements sent (Parse)       {per('F Parse') + per('F Query'):.2f}")
    print(f"  syncs                         {per('F Sync'):.2f}")


if __name__ == "__main__":
    main()
