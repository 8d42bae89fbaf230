"""Apply 500 generated versioned files: polymigrate beside psql, on the same server, in one run.

    .venv/bin/python bench/bench_postgres_apply.py [--files 500|5000] [--repeat 3] [--url postgresql://…] [--before TREE]

``--before TREE`` (e.g. ``git worktree add /tmp/before <commit>``) runs that checkout's library and CLI
beside this one's, in the same round-robin, so a before → after comparison comes from one run.

Without --url it starts a private PostgreSQL (initdb + pg_ctl on a free port, default settings,
fsync on) so other people's load on the shared server does not blur the figures. Each contender
gets a fresh database per repetition; the best of the repetitions is reported, and each contender's
ratio to the floor in the same round, as the median over the rounds.

* ``psql -f`` per file: one psql process per file, each statement autocommitted (how a shell loop
  without a tool applies a folder);
* ``psql -1`` of the concatenation: every file in ONE transaction: the floor (no ledger, no
  per-file commit, one process);
* ``psql`` of the concatenation with each file between ``BEGIN`` and ``COMMIT``: one process, one
  session, one transaction per file and no ledger: what a durable commit per file costs on the
  server alone, the part of polymigrate's figure that is the guarantee and not its own overhead;
* polymigrate: each file in its own transaction together with its ledger row, as in production,
  in-process (library) and as a CLI process (Python start-up included);
* Flyway 13's CLI, when ``make engines`` installed it (``$POLYMIGRATE_FLYWAY_CP``): the same
  per-file guarantee, a JVM start-up included;
* with ``--attribute``, the library again with its guarantees taken away one at a time (the session
  reset; then the lock's fence too; then the ledger row too): what each costs, so the figure's gap
  to the floor can be read as guarantees and the tool's own overhead. Never a way to run it.

Prints figures only; it never asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "include"))

from polymigrate.adapters.postgresql.adapter import PostgresAdapter  # noqa: E402
from polymigrate.catalog import discover  # noqa: E402
from polymigrate.executor import migrate  # noqa: E402
from polymigrate.ledger import RunContext  # noqa: E402


def generate(folder: Path, n: int) -> None:
    """Typical small DDL + data files: a table, an index, a few rows, a comment, a check constraint."""
    folder.mkdir(parents=True)
    for i in range(1, n + 1):
        (folder / f"V{i}__table_{i}.sql").write_text(
            f"-- table {i}\n"
            f"CREATE TABLE t_{i} (\n  id bigint PRIMARY KEY,\n  name text NOT NULL,\n"
            f"  qty int NOT NULL DEFAULT 0 CHECK (qty >= 0),\n  created_at timestamptz NOT NULL DEFAULT now()\n);\n"
            f"CREATE INDEX t_{i}_name ON t_{i} (name);\n"
            f"INSERT INTO t_{i} (id, name, qty) VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3);\n"
            f"COMMENT ON TABLE t_{i} IS 'generated table {i}';\n", encoding="utf-8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateServer:
    """A throw-away PostgreSQL cluster in a temp dir."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pm_bench_pg_"))
        self.port = free_port()

    def __enter__(self) -> str:
        initdb = shutil.which("initdb") or "/usr/lib/postgresql/15/bin/initdb"
        pg_ctl = shutil.which("pg_ctl") or "/usr/lib/postgresql/15/bin/pg_ctl"
        self.pg_ctl = pg_ctl
        env = {**os.environ, "LC_ALL": "C"}
        run_as = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        if run_as:
            shutil.chown(self.dir, "postgres")
        self.run_as = run_as
        subprocess.run([*run_as, initdb, "-D", str(self.dir / "data"), "-U", "postgres", "-A", "trust", "-E", "UTF8"],
                       check=True, capture_output=True, env=env)
        subprocess.run([*run_as, pg_ctl, "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "start",
                        # psql -1 of 5,000 files holds ~15,000 locks in its one transaction; the default
                        # lock table (64 per connection) refuses it with "out of shared memory"
                        "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                              "-c max_locks_per_transaction=1024"],
                       check=True, capture_output=True, env=env)
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def __exit__(self, *exc) -> None:
        subprocess.run([*self.run_as, self.pg_ctl, "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def fresh_db(admin_url: str) -> tuple[str, callable]:
    name = f"pm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = admin_url.rsplit("/", 1)[0]

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as c:
            c.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
    return f"{base}/{name}", drop


def check(url: str, n: int, ledger: bool) -> None:
    with psycopg.connect(url) as c:
        tables = c.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
        assert tables == n, f"expected {n} tables, found {tables}"
        if ledger:
            rows = c.execute("SELECT count(*) FROM polymigrate.schema_history WHERE success").fetchone()[0]
            assert rows == n, f"expected {n} ledger rows, found {rows}"


def psql_per_file(url: str, folder: Path) -> None:
    for f in sorted(folder.glob("V*.sql"), key=lambda p: int(p.name[1:].split("__")[0])):
        subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(f)], check=True,
                       stdout=subprocess.DEVNULL)


def psql_single_transaction(url: str, concatenated: Path) -> None:
    subprocess.run(["psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(concatenated)],
                   check=True, stdout=subprocess.DEVNULL)


def psql_transaction_per_file(url: str, per_file: Path) -> None:
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", str(per_file)],
                   check=True, stdout=subprocess.DEVNULL)


def polymigrate_library(url: str, folder: Path) -> None:
    migrations = discover("bench", "postgresql", folder).applicable("postgresql")
    adapter = PostgresAdapter.from_url(url, domain="bench")
    try:
        migrate(adapter, migrations, RunContext(domain="bench", actor="bench", run_id="bench"))
    finally:
        adapter.close()


_LIBRARY_ELSEWHERE = """
import sys, time
from pathlib import Path
from polymigrate.adapters.postgresql.adapter import PostgresAdapter
from polymigrate.catalog import discover
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext
started = time.perf_counter()
migrations = discover("bench", "postgresql", Path(sys.argv[2])).applicable("postgresql")
adapter = PostgresAdapter.from_url(sys.argv[1], domain="bench")
try:
    migrate(adapter, migrations, RunContext(domain="bench", actor="bench", run_id="bench"))
finally:
    adapter.close()
print(time.perf_counter() - started)
"""


def _without(*guarantees: str):
    """The library with ``guarantees`` ("reset", "fence", "ledger") left out of each file's transaction,
    patched for the duration of one run (``--attribute``)."""
    def run(url: str, folder: Path) -> None:
        patched = {"_reset_and_fence": PostgresAdapter._reset_and_fence,
                   "_run_transactional": PostgresAdapter._run_transactional}
        reset_and_fence, transactional = patched.values()
        if "fence" in guarantees:
            PostgresAdapter._reset_and_fence = lambda self, conn, reset: None
        elif "reset" in guarantees:
            PostgresAdapter._reset_and_fence = lambda self, conn, reset: reset_and_fence(self, conn, False)
        if "ledger" in guarantees:
            PostgresAdapter._run_transactional = lambda self, m, statements, settings, record: \
                transactional(self, m, statements, settings, lambda conn: None)
        try:
            polymigrate_library(url, folder)
        finally:
            for name, fn in patched.items():
                setattr(PostgresAdapter, name, fn)
    return run


def polymigrate_library_of(root: Path):
    """The library of another checkout, timed as ``polymigrate_library`` is (imports excluded), in a
    process of its own so its modules do not mix with this checkout's."""
    def run(url: str, folder: Path) -> float:
        out = subprocess.run([sys.executable, "-c", _LIBRARY_ELSEWHERE, url, str(folder)], check=True,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(root / "include")})
        return float(out.stdout.strip().splitlines()[-1])
    return run


def polymigrate_cli(url: str, folder: Path, root: Path = ROOT) -> None:
    subprocess.run([sys.executable, "-c", "from polymigrate.cli import main; main()", "migrate", "--url", url,
                    "--locations", str(folder), "-d", "bench"], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONPATH": str(root / "include")})


def flyway(url: str, folder: Path) -> None:
    """Flyway 13's command line (``make engines`` installs it: $POLYMIGRATE_FLYWAY_CP): each file in its
    own transaction with its row in flyway_schema_history, a JVM start-up included."""
    from psycopg.conninfo import conninfo_to_dict

    c = conninfo_to_dict(url)
    out = subprocess.run(["java", "-cp", os.environ["POLYMIGRATE_FLYWAY_CP"], "FlywayCli", "migrate",
                          f"-url=jdbc:postgresql://{c.get('host', '127.0.0.1')}:{c.get('port', 5432)}/{c['dbname']}",
                          f"-user={c.get('user', 'postgres')}", f"-locations=filesystem:{folder}"],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise SystemExit(f"Flyway failed:\n{(out.stdout + out.stderr)[-3000:]}")


def measure(admin_url: str, fn, arg: Path, n: int, repeat: int, ledger: bool) -> list[float]:
    times = []
    for _ in range(repeat):
        url, drop = fresh_db(admin_url)
        try:
            # every contender starts with no dirty buffers owed: none pays for a checkpoint of the
            # 500 tables its predecessor in the round wrote
            with psycopg.connect(admin_url, autocommit=True) as c:
                c.execute("CHECKPOINT")
            started = time.perf_counter()
            inner = fn(url, arg)  # a contender that times itself (imports left out) returns its seconds
            times.append(inner if isinstance(inner, float) else time.perf_counter() - started)
            check(url, n + (fn is flyway), ledger)  # Flyway's history table is in public too
        finally:
            drop()
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=500)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--url", help="admin URL of an existing server (default: start a private one)")
    p.add_argument("--skip-per-file", action="store_true", help="skip the slow psql-per-file contender")
    p.add_argument("--before", type=Path, help="another checkout of polymigrate: its library and CLI run beside this one's")
    p.add_argument("--attribute", action="store_true", help="also the library without the session reset, without "
                   "the fence as well, and without the ledger row as well: what each guarantee costs")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pm_bench_files_"))
    folder = work / "sql"
    generate(folder, args.files)
    concatenated = work / "all.sql"
    ordered = [f.read_text() for f in sorted(folder.glob("V*.sql"), key=lambda p: int(p.name[1:].split("__")[0]))]
    concatenated.write_text("".join(ordered))
    per_file = work / "per_file.sql"
    per_file.write_text("".join(f"BEGIN;\n{body}\nCOMMIT;\n" for body in ordered))
    server = None if args.url else PrivateServer()
    admin = args.url or server.__enter__()
    try:
        with psycopg.connect(admin) as c:
            version = c.execute("SHOW server_version").fetchone()[0]
            fsync = c.execute("SHOW fsync").fetchone()[0]
            sync_commit = c.execute("SHOW synchronous_commit").fetchone()[0]
        print(f"PostgreSQL {version} ({'private server' if server else admin}); fsync={fsync}, "
              f"synchronous_commit={sync_commit}; {args.files} files, best of {args.repeat}; "
              f"{os.cpu_count()} CPUs; load average at the start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        contenders = [("psql -1 (one transaction, floor)", psql_single_transaction, concatenated, False),
                      ("psql, BEGIN/COMMIT per file (one session)", psql_transaction_per_file, per_file, False),
                      ("polymigrate library (txn + ledger row per file)", polymigrate_library, folder, True),
                      ("polymigrate CLI process (same, + Python start-up)", polymigrate_cli, folder, True)]
        if args.before:
            contenders.insert(2, ("polymigrate library, --before checkout", polymigrate_library_of(args.before.resolve()),
                                  folder, True))
            contenders.append(("polymigrate CLI process, --before checkout",
                               lambda url, folder: polymigrate_cli(url, folder, args.before.resolve()), folder, True))
        if args.attribute:
            at = contenders.index(next(c for c in contenders if c[1] is polymigrate_library)) + 1
            contenders[at:at] = [("  the same, without the session reset", _without("reset"), folder, True),
                                 ("  … and without the lock's fence", _without("reset", "fence"), folder, True),
                                 ("  … and without the ledger row", _without("reset", "fence", "ledger"), folder, False)]
        if os.environ.get("POLYMIGRATE_FLYWAY_CP") and shutil.which("java"):
            contenders.append(("Flyway 13 CLI (txn + history row per file)", flyway, folder, False))
        else:
            print("Flyway not run: $POLYMIGRATE_FLYWAY_CP or java missing (make engines installs it)")
        if not args.skip_per_file:
            contenders.append((f"psql -f per file ({args.files} processes)", psql_per_file, folder, False))
        results: dict[str, list[float]] = {name: [] for name, *_ in contenders}
        # round-robin, so a burst of load from elsewhere hits every contender alike
        for _ in range(args.repeat):
            for name, fn, arg, ledger in contenders:
                results[name] += measure(admin, fn, arg, args.files, 1, ledger)
        floor_times = results[contenders[0][0]]
        floor = min(floor_times)
        # This machine's CPU speed moves by up to 1.8x within seconds (a VM; the same Python loop took
        # 1.0-1.8 s a minute apart): each round's ratio to the floor measured in the same round is the
        # steadier figure, and its median across rounds is the one to quote.
        print(f"{'contender':52} {'best s':>8} {'median s':>9} {'× floor':>8} {'× floor, median of rounds':>26}")
        for name, times in results.items():
            paired = statistics.median(t / f for t, f in zip(times, floor_times))
            print(f"{name:52} {min(times):8.3f} {statistics.median(times):9.3f} {min(times) / floor:8.2f} {paired:26.2f}")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if server:
            server.__exit__(None, None, None)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
