"""What the hash chain costs: audit emit throughput beside a plain INSERT, verify and report speed.

    .venv/bin/python bench/bench_audit_store.py [--events 2000] [--writers 4] [--url postgresql://…]

Without --url it starts a private PostgreSQL (as bench_postgres_apply.py does) so the shared
server's load does not blur the figures. Side by side, per writer count:

* plain: one autocommitted INSERT of the same columns per event, no chain (the floor);
* chained: ``PostgresAuditStore.emit`` (lock the chain head, hash, insert, move the head, commit).

Then ``verify`` over every row written and the HTML report over them. Prints figures only.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "include"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_postgres_apply import PrivateServer, fresh_db  # noqa: E402
from polymigrate.audit import PostgresAuditStore  # noqa: E402
from polymigrate.audit.report import render  # noqa: E402
from polymigrate.audit.store import COLUMNS, canonical_json  # noqa: E402
from polymigrate.events import AuditEvent  # noqa: E402

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def event(writer: int, i: int) -> AuditEvent:
    kind = "migration_started" if i % 2 == 0 else "migration_succeeded"
    return AuditEvent(kind=kind, domain="social-commerce", environment="staging", region=f"region_{writer}",
                      technology="postgresql", version=f"1.{i // 2}", script=f"V1.{i // 2}__step.sql",
                      checksum=123456789, actor="bench@airflow", run_id=f"bench_{writer}", dag_id="bench",
                      task_id=f"region_{writer}.postgresql", try_number=1, duration_ms=i if i % 2 else None,
                      at=T0 + timedelta(seconds=i), details={"statements": 3})


def run_writers(writers: int, per_writer: int, write) -> float:
    barrier = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            emit = write()
            barrier.wait()
            for i in range(per_writer):
                emit(event(n, i))
        except BaseException as exc:
            errors.append(exc)
            raise

    threads = [threading.Thread(target=work, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def plain_writer(url: str):
    def make():
        conn = psycopg.connect(url, autocommit=True)
        cols = ", ".join(COLUMNS)
        query = f"INSERT INTO plain_events ({cols}, body) VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))})"

        def emit(e: AuditEvent) -> None:
            conn.execute(query, [getattr(e, c) for c in COLUMNS] + [canonical_json(e)])
        return emit
    return make


def chained_writer(url: str):
    def make():
        return PostgresAuditStore(url).emit
    return make


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=2000, help="events per case")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--url", help="admin URL of a server to use instead of a private one")
    args = ap.parse_args()
    server = None if args.url else PrivateServer()
    admin = args.url or server.__enter__()
    try:
        print(f"{args.events} events per case; server: {'given' if args.url else 'private, fsync on'}")
        print(f"{'writers':>8} {'plain INSERT ev/s':>18} {'chained emit ev/s':>18} {'chain cost':>11}")
        for writers in sorted({1, args.writers}):
            url, drop = fresh_db(admin)
            try:
                store = PostgresAuditStore(url)
                store.ensure_schema()
                with psycopg.connect(url, autocommit=True) as c:
                    c.execute("CREATE TABLE plain_events (LIKE polymigrate_audit.events INCLUDING DEFAULTS)")
                    c.execute("ALTER TABLE plain_events DROP COLUMN id, DROP COLUMN prev_hash, DROP COLUMN hash")
                per = args.events // writers
                plain = run_writers(writers, per, plain_writer(url))
                chained = run_writers(writers, per, chained_writer(url))
                n = per * writers
                print(f"{writers:>8} {n / plain:>18.0f} {n / chained:>18.0f} {chained / plain:>10.2f}x")
                if writers == args.writers:
                    # Grow the chain for the read side: 10x the events.
                    run_writers(writers, per * 9, chained_writer(url))
                    t = time.perf_counter()
                    result = store.verify()
                    verify_s = time.perf_counter() - t
                    assert result.ok, result
                    t = time.perf_counter()
                    records = store.query()
                    query_s = time.perf_counter() - t
                    t = time.perf_counter()
                    html = render(records, "html")
                    html_s = time.perf_counter() - t
                    print(f"verify {result.checked} rows: {verify_s:.2f} s ({result.checked / verify_s:.0f} rows/s); "
                          f"query all: {query_s:.2f} s; HTML report: {html_s:.2f} s ({len(html) // 1024} KiB)")
                store.close()
            finally:
                drop()
    finally:
        if server:
            server.__exit__(None, None, None)


if __name__ == "__main__":
    main()
