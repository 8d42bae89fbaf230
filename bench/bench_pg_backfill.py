"""A 2,000,000-row backfill under application load: one naive UPDATE beside polymigrate's batched backfill.

    .venv/bin/python bench/bench_pg_backfill.py [--rows 2000000] [--clients 4] [--rate 200] [--url postgresql://…]

Without --url it starts a private PostgreSQL 15 (initdb + pg_ctl on a free port, default settings,
fsync on; binaries from $POLYMIGRATE_PG_BIN or Debian's /usr/lib/postgresql/15/bin), so other
sessions' load on the shared server does not blur the figures. Each contender gets its own copy of
the same table (``CREATE DATABASE … TEMPLATE``), ``accounts(id bigint primary key, first_name,
last_name, balance, full_name)``, and runs

    UPDATE accounts SET full_name = first_name || ' ' || last_name WHERE full_name IS NULL

while pgbench plays the application: ``--clients`` clients (default 4), each transaction a point
SELECT and a point UPDATE of one random account (``BEGIN; SELECT …; UPDATE … balance + 1; END``),
``--rate`` transactions per second in all (pgbench ``-R``: latency counts from the scheduled
start, as a user waiting for a page would). Rows printed side by side:

* ``app alone``: the same load with no backfill (this machine's noise floor), first and again last,
  with the load average as each row ended (other sessions' work on a shared machine shows there);
* ``naive UPDATE``: the statement above in one transaction (psycopg);
* ``polymigrate backfill``: the same statement as a ``backfill=true`` file through
  ``polymigrate.executor.migrate`` with default settings (50 ms batches, adaptive).

pgbench runs in consecutive ``--chunk``-second slices until the contender is done (pgbench has
no graceful stop; a slice waits for its transactions in flight, so a transaction blocked by the
naive UPDATE is counted with its whole wait). Per-transaction logs give max and p99 latency;
failed transactions are pgbench's own count plus aborted clients. Prints figures; asserts nothing
about timings (it does check that every row was backfilled exactly once).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_postgres_apply import PrivateServer  # noqa: E402
from polymigrate.adapters.postgresql.adapter import PostgresAdapter  # noqa: E402
from polymigrate.catalog import discover  # noqa: E402
from polymigrate.executor import migrate  # noqa: E402
from polymigrate.ledger import RunContext  # noqa: E402

UPDATE = "UPDATE accounts SET full_name = first_name || ' ' || last_name WHERE full_name IS NULL"
APP = """\\set id random(1, {rows})
BEGIN;
SELECT balance, full_name FROM accounts WHERE id = :id;
UPDATE accounts SET balance = balance + 1 WHERE id = :id;
END;
"""


def pg_bin(name: str) -> str:
    for d in (os.environ.get("POLYMIGRATE_PG_BIN"), "/usr/lib/postgresql/15/bin"):
        if d and (Path(d) / name).exists():
            return str(Path(d) / name)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: set POLYMIGRATE_PG_BIN to PostgreSQL's bin folder")
    return found


def make_template(admin: str, rows: int) -> str:
    name = f"pm_bf_tmpl_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = admin.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, "
                  "balance int NOT NULL DEFAULT 0, full_name text)")
        c.execute("INSERT INTO accounts (id, first_name, last_name) SELECT g, 'first' || g, 'last' || (g %% 9973) "
                  "FROM generate_series(1, %s) g", (rows,))
        c.execute("VACUUM ANALYZE accounts")
    return name


def copy_of(admin: str, template: str) -> tuple[str, str]:
    name = f"pm_bf_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
        c.execute("CHECKPOINT")
    return admin.rsplit("/", 1)[0] + "/" + name, name


def drop(admin: str, name: str) -> None:
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class App:
    """pgbench in slices until stopped; collects per-transaction latencies and failures."""

    def __init__(self, url: str, rows: int, clients: int, rate: int, chunk: int, work: Path):
        self.url, self.clients, self.rate, self.chunk = url, clients, rate, chunk
        self.work = work / uuid.uuid4().hex[:6]
        self.work.mkdir()
        self.script = self.work / "app.sql"
        self.script.write_text(APP.format(rows=rows))
        self.latencies_us: list[int] = []
        self.failed = 0
        self.transactions = 0
        self.slices = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.errors: list[str] = []

    def start(self) -> "App":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.slices += 1
            prefix = self.work / f"s{self.slices}"
            p = subprocess.run([pg_bin("pgbench"), "-n", "-c", str(self.clients), "-j", str(min(self.clients, 2)),
                                "-T", str(self.chunk), "-R", str(self.rate), "-f", str(self.script), "-l",
                                f"--log-prefix={prefix}", "--max-tries=1", self.url],
                               capture_output=True, text=True)
            m = re.search(r"number of failed transactions: (\d+)", p.stdout)
            self.failed += int(m.group(1)) if m else 0
            aborted = len(re.findall(r"client \d+ aborted", p.stderr))
            self.failed += aborted
            if p.returncode not in (0, 2) or aborted:
                self.errors.append(p.stderr.strip()[-300:])
            for f in glob.glob(f"{prefix}.*"):
                for line in open(f):
                    parts = line.split()
                    if len(parts) < 3:
                        continue
                    if parts[2].isdigit():
                        self.latencies_us.append(int(parts[2]))
                        self.transactions += 1
                    elif parts[2] == "failed":
                        self.transactions += 1  # counted by pgbench's summary already

    def figures(self) -> dict:
        lat = sorted(self.latencies_us)
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000 if lat else float("nan")
        return {"tx": self.transactions, "max_ms": (lat[-1] / 1000 if lat else float("nan")), "p99_ms": p99,
                "p50_ms": lat[len(lat) // 2] / 1000 if lat else float("nan"), "failed": self.failed}


def naive(url: str, folder: Path) -> dict:
    with psycopg.connect(url) as c:
        n = c.execute(UPDATE).rowcount
        c.commit()
    return {"rows": n}


def batched(url: str, folder: Path) -> dict:
    migrations = discover("bench", "postgresql", folder).applicable("postgresql")
    adapter = PostgresAdapter.from_url(url, domain="bench")
    try:
        result = migrate(adapter, migrations, RunContext(domain="bench", actor="bench", run_id="bench"))
    finally:
        adapter.close()
    with psycopg.connect(url) as c:
        b = c.execute("SELECT progress->'backfill' FROM polymigrate.schema_history").fetchone()[0]
    return {"rows": b["updated"], "batches": b["batches"], "final_batch": b.get("batch_size"),
            "applied": len(result.applied)}


def idle(seconds: float):
    def run(url: str, folder: Path) -> dict:
        time.sleep(seconds)
        return {"rows": 0}
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--rate", type=int, default=200, help="application transactions per second, all clients")
    ap.add_argument("--chunk", type=int, default=5, help="seconds per pgbench slice")
    ap.add_argument("--header", action="append", default=None,
                    help="the backfill file's header options; repeat to compare settings side by side "
                         "(default: backfill=true, the defaults)")
    ap.add_argument("--url", help="admin URL of an existing server (default: start a private one)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="    %(message)s")
    logging.getLogger("polymigrate").setLevel(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="pm_bench_bf_"))
    headers = args.header or ["backfill=true"]
    folders = []
    for i, header in enumerate(headers):
        folder = work / f"sql{i}"
        folder.mkdir()
        (folder / "V1__backfill_full_name.sql").write_text(f"-- polymigrate: {header}\n{UPDATE};\n")
        folders.append(folder)
    server = None if args.url else PrivateServer()
    admin = args.url or server.__enter__()
    try:
        with psycopg.connect(admin) as c:
            version = c.execute("SHOW server_version").fetchone()[0]
            settings = dict(c.execute("SELECT name, setting FROM pg_settings WHERE name IN "
                                      "('fsync', 'synchronous_commit', 'shared_buffers', 'max_wal_size')").fetchall())
        print(f"PostgreSQL {version} ({'private server' if server else admin}); {settings}; {os.cpu_count()} CPUs; "
              f"{args.rows:,} rows; app: pgbench {args.clients} clients, {args.rate} tx/s (point SELECT + UPDATE)")
        started = time.perf_counter()
        template = make_template(admin, args.rows)
        print(f"table built in {time.perf_counter() - started:.1f}s")
        rows: list[tuple[str, float, dict, dict]] = []
        floor = idle(10.0)
        contenders = [("app alone (no backfill, 10 s)", floor, None), ("naive UPDATE (one statement)", naive, None)]
        contenders += [("polymigrate backfill" + ("" if h == "backfill=true" else f" ({h.replace('backfill=true, ', '')})"),
                        batched, f) for h, f in zip(headers, folders)]
        # the floor again at the end: other work on a shared machine shows up as a floor that moved
        contenders.append(("app alone again (10 s)", floor, None))
        for name, fn, folder in contenders:
            url, db = copy_of(admin, template)
            try:
                app = App(url, args.rows, args.clients, args.rate, args.chunk, work).start()
                time.sleep(1.0)  # the app is running before the backfill starts
                t0 = time.perf_counter()
                out = fn(url, folder)
                seconds = time.perf_counter() - t0
                out["load"] = os.getloadavg()[0]  # the 1-minute load average as the contender ended
                time.sleep(1.0)
                app.stop()
                with psycopg.connect(url) as c:
                    left, wrong = c.execute("SELECT count(*) FILTER (WHERE full_name IS NULL), count(*) FILTER "
                                            "(WHERE full_name <> first_name || ' ' || last_name) FROM accounts").fetchone()
                if fn is not floor:
                    assert left == 0 and wrong == 0 and out["rows"] == args.rows, (name, left, wrong, out)
                rows.append((name, seconds, app.figures(), out))
                print(f"  {name}: {seconds:.1f}s {out} {app.figures()}" + (f" errors: {app.errors[:2]}" if app.errors else ""))
            finally:
                drop(admin, db)
        drop(admin, template)
        naive_s = rows[1][1]
        print()
        width = max(34, *(len(r[0]) for r in rows))
        print(f"{'contender':{width}} {'backfill s':>10} {'× naive':>8} {'app tx':>7} {'p50 ms':>7} {'p99 ms':>8} "
              f"{'max ms':>9} {'failed':>6} {'load':>5}")
        for name, seconds, f, out in rows:
            ratio = "" if name.startswith("app alone") else f"{seconds / naive_s:8.2f}"
            secs = "" if name.startswith("app alone") else f"{seconds:10.1f}"
            print(f"{name:{width}} {secs:>10} {ratio:>8} {f['tx']:7d} {f['p50_ms']:7.1f} {f['p99_ms']:8.1f} "
                  f"{f['max_ms']:9.1f} {f['failed']:6d} {out['load']:5.1f}")
        print("targets (issue 18): polymigrate backfill app max <= 100 ms, 0 failed, <= 1.5x naive. "
              f"load = 1-min load average on {os.cpu_count()} CPUs as each row ended: a loaded machine raises the "
              "app's latency whatever runs (compare with the app-alone rows)")
    finally:
        if server:
            server.__exit__(None, None, None)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
