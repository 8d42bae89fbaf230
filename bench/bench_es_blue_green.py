"""Elasticsearch/OpenSearch: blue-green reindex of 1,000,000 documents under continuous searches,
beside a bare ``_reindex`` of the same data, then a blue-green killed with SIGKILL half way and rerun.

What it prints, side by side, in one run on one server:

* bare ``_reindex``: ``PUT`` the new index, ``POST _reindex`` (the same body, batch size and
  slices), wait — what a person would do by hand, with nothing verified and no alias switched;
* ``blue_green``: the adapter's whole step (new ``<alias>_v2``, async reindex watched through
  ``_tasks``, catch-up passes over the ``at`` field, verified counts, one ``_aliases`` switch) while
  another process searches the alias without pause: searches made, failed (an error or a failed
  shard), empty (no hit) and short (fewer hits than documents), and the slowest. The searcher's
  client (the seam's) retries a 429 three times as clients do; one that still comes back is retried
  once more after 100 ms and counted as ``throttled`` — the test server's 512 MB heap trips its
  memory breaker under load, whatever the migration does;
* kill -9: the CLI runs the next blue_green (``_v3``) in a subprocess, is killed once the copy
  passed a third, and is run again: it re-attaches to the server's task; the alias must end on one
  complete index.

It uses $OPENSEARCH_URL (``make engines``) or ``--url`` (e.g. an Elasticsearch from
docker-compose), names everything ``bench-<random>-…`` and deletes it at the end. Documents are
small (the test server's JVM has 512 MB). It never asserts timings. Usage:

    .venv/bin/python bench/bench_es_blue_green.py [--docs 1000000] [--url http://127.0.0.1:9250] [--no-kill]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

from polymigrate.adapters.elasticsearch.adapter import ElasticsearchAdapter
from polymigrate.adapters.elasticsearch.api import SearchApi, SearchError
from polymigrate.catalog import discover
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext
from polymigrate.spec import TechnologyConfig

MAPPING = {"dynamic": "strict", "properties": {"sku": {"type": "keyword"}, "price": {"type": "float"},
                                               "stock": {"type": "integer"}, "at": {"type": "date"}}}
NEW_MAPPING = {**MAPPING, "properties": {**MAPPING["properties"],
                                         "price": {"type": "scaled_float", "scaling_factor": 100}}}
BODY = {"settings": {"number_of_shards": 1, "number_of_replicas": 1}, "mappings": NEW_MAPPING}
BATCH = 1000  # scroll/bulk batch: larger ones trip the 512 MB test JVM's memory breaker sooner
PAST_MS = 1_600_000_000_000


def load(api: SearchApi, index: str, alias: str, n: int) -> float:
    """``n`` small documents into ``index`` behind ``alias``; seconds taken."""
    api.create_index(index, {"settings": {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "-1"},
                             "mappings": MAPPING})
    api.update_aliases([{"add": {"index": index, "alias": alias}}])
    helpers = __import__("opensearchpy.helpers" if api.server.flavour == "opensearch" else "elasticsearch.helpers",
                         fromlist=["parallel_bulk"])
    started = time.monotonic()
    actions = ({"_index": index, "_id": str(i), "_source": {"sku": f"s{i}", "price": (i % 10000) / 100,
                                                            "stock": i % 97, "at": PAST_MS + i * 1000}}
               for i in range(n))
    for ok, item in helpers.parallel_bulk(api.client, actions, thread_count=2, chunk_size=5000, queue_size=4):
        if not ok:
            raise SystemExit(f"bulk load failed: {item}")
    api.put_settings(index, {"index.refresh_interval": None, "index.number_of_replicas": 1})
    api.refresh(index)
    return time.monotonic() - started


def patiently(call, *args, **kw):
    """The bench's own reads, retried while the server refuses them (429: its 512 MB heap is full)."""
    for attempt in range(60):
        try:
            return call(*args, **kw)
        except SearchError as exc:
            if not exc.transient or attempt == 59:
                raise
            time.sleep(2)


def completed(api: SearchApi, task: str) -> bool:
    return bool((patiently(api.task, task) or {}).get("completed"))


def bare_reindex(api: SearchApi, source: str, dest: str) -> float:
    started = time.monotonic()
    api.create_index(dest, BODY)
    task = api.reindex({"source": {"index": source, "size": BATCH}, "dest": {"index": dest}}, slices="auto")
    while not completed(api, task):
        time.sleep(0.5)
    api.refresh(dest)
    elapsed = time.monotonic() - started
    assert api.count(dest) == api.count(source), "bare reindex lost documents"
    return elapsed


def searcher(url: str, alias: str, expected: int, stop, out) -> None:
    """Search the alias back to back until ``stop``; send the tallies through ``out``.

    A 429 (the server's memory circuit breaker, or a full search queue) is retried once after
    100 ms, as clients do; it counts as ``throttled``, and as failed only if the retry fails too.
    Every failure is kept with its wall-clock time, to place it against the switch.
    """
    api = SearchApi.from_url(url, timeout=30)
    made = empty = short = throttled = 0
    slowest = 0.0
    failures: list[tuple[float, str]] = []
    body = {"size": 1, "query": {"match_all": {}}, "track_total_hits": True}
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            try:
                r = api.search(alias, body)
            except SearchError as exc:
                if exc.status != 429:
                    raise
                throttled += 1
                time.sleep(0.1)
                r = api.search(alias, body)
            total = r["hits"]["total"]["value"]
            if r["_shards"].get("failed"):
                failures.append((time.time(), json.dumps(r["_shards"])[:200]))
            elif total == 0 or not r["hits"]["hits"]:
                empty += 1
            elif total < expected:
                short += 1
        except SearchError as exc:
            failures.append((time.time(), str(exc)[:160]))
        made += 1
        slowest = max(slowest, time.monotonic() - t0)
    out.send({"made": made, "failed": len(failures), "empty": empty, "short": short, "throttled": throttled,
              "slowest_ms": slowest * 1000, "failures": failures})


class Searching:
    """A searcher process on ``alias`` for the duration of a ``with`` block; ``tallies`` after it."""

    def __init__(self, url: str, alias: str, expected: int):
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.receive, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=searcher, args=(url, alias, expected, self.stop, send))
        self.tallies: dict = {}

    def __enter__(self) -> "Searching":
        self.proc.start()
        time.sleep(2)  # searching before the work starts
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(2)  # and after it
        self.stop.set()
        self.tallies = self.receive.recv()
        self.proc.join()


def step_file(folder: Path, version: int, alias: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{version}-products-v{version + 1}.json").write_text(json.dumps({"steps": [{"blue_green": {
        "alias": alias, "body": BODY, "catch_up": {"field": "at", "overlap": "1m"}, "batch_size": BATCH}}]}))
    return folder


def blue_green(url: str, folder: Path, ledger: str, alias: str) -> float:
    adapter = ElasticsearchAdapter.from_url(url, domain="bench", settings=TechnologyConfig(ledger=ledger, batch_size=BATCH))
    try:
        cat = discover("bench", "elasticsearch", folder)
        started = time.monotonic()
        migrate(adapter, cat.applicable("elasticsearch"), RunContext(domain="bench", actor="bench"))
        return time.monotonic() - started
    finally:
        adapter.close()


def describe(seen: dict, n: int, switched_at: float | None = None) -> str:
    text = (f"{seen['made']:,} searches, {seen['failed']} failed, {seen['empty']} empty, {seen['short']} short of "
            f"{n:,}, {seen['throttled']} throttled (429, retried); slowest {seen['slowest_ms']:.0f} ms")
    if switched_at is not None:
        near = [f for f in seen["failures"] if abs(f[0] - switched_at) <= 5]
        text += f"; failed within 5 s of the switch: {len(near)}"
    if seen["failures"]:
        text += "\n    first failure: " + seen["failures"][0][1]
    return text


def killed_and_rerun(api: SearchApi, url: str, folder: Path, ledger: str, alias: str, n: int) -> dict:
    cli = [sys.executable, "-c", "from polymigrate.cli import main; main()", "migrate",
           "--url", f"{url}?lease_ms=5000&poll_seconds=0.5", "--locations", str(folder), "-d", "bench",
           "--table", ledger]
    started = time.monotonic()
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    task, done = None, 0
    while done < n // 3:
        if proc.poll() is not None:
            raise SystemExit(f"the CLI ended before the kill: {proc.stderr.read()[-2000:]}")
        rows = patiently(api.search, ledger, {"query": {"term": {"kind": "entry"}}, "size": 100})["hits"]["hits"] \
            if patiently(api.exists, ledger) else []
        for row in rows:
            task = ((row["_source"].get("progress") or {}).get("step_state") or {}).get("task") or task
        if task and not completed(api, task):
            status = ((patiently(api.task, task) or {}).get("task") or {}).get("status") or {}
            done = int(status.get("created") or 0)
        time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = time.monotonic() - started
    rerun = subprocess.run(cli, capture_output=True, text=True)
    total = time.monotonic() - started
    behind = patiently(api.alias_targets, alias)
    index = sorted(behind)[0]
    return {"killed_after_s": killed_at, "killed_at_docs": done, "total_s": total, "rerun_exit": rerun.returncode,
            "reattached": "re-attaching" in rerun.stderr, "alias_on": sorted(behind),
            "count": patiently(api.count, alias), "index_count": patiently(api.count, index),
            "error": rerun.stderr[-1500:] if rerun.returncode else ""}


def cleanup(api: SearchApi, prefix: str) -> None:
    tasks = patiently(api.request, "GET", "/_tasks", params={"actions": "*reindex*", "detailed": True})
    for node in (tasks.get("nodes") or {}).values():
        for tid, t in (node.get("tasks") or {}).items():
            if prefix in (t.get("description") or ""):
                patiently(api.cancel_task, tid)
    rows = patiently(api.request, "GET", f"/_cat/indices/*{prefix}*",
                     params={"format": "json", "h": "index", "expand_wildcards": "all"})
    names = [r["index"] for r in rows]
    if names:
        patiently(api.request, "DELETE", "/" + ",".join(names))


def compare(api: SearchApi, url: str, folder: Path, prefix: str, ledger: str, alias: str, n: int) -> None:
    """The bare _reindex and the blue_green, each while a client searches the alias; printed side by side."""
    with Searching(url, alias, n) as during_bare:
        bare = bare_reindex(api, f"{alias}_v1", f"{prefix}bare")
    api.delete_index([f"{prefix}bare"])
    step_file(folder, 1, alias)
    with Searching(url, alias, n) as during_bg:
        bg = blue_green(url, folder, ledger, alias)
    on = sorted(patiently(api.alias_targets, alias))
    row = patiently(api.search, ledger, {"query": {"term": {"kind": "entry"}}, "size": 1})["hits"]["hits"][0]["_source"]
    switched = datetime.fromisoformat(row["progress"]["switches"][0]["switched_at"]).timestamp()
    print()
    print(f"{'':46} {'wall':>9} {'docs/s':>9}  ratio   (a client searches the alias throughout both)")
    print(f"{'bare _reindex (PUT index + POST _reindex)':46} {bare:8.1f}s {n / bare:9,.0f}")
    print(f"{'blue_green (copy, catch-up, verify, switch)':46} {bg:8.1f}s {n / bg:9,.0f}  {bg / bare:.2f}× bare")
    print(f"alias now on {on}, {patiently(api.count, alias):,} documents")
    print(f"searches during the bare _reindex: {describe(during_bare.tallies, n)}")
    print(f"searches during blue_green:        {describe(during_bg.tallies, n, switched)}", flush=True)
    api.delete_index([f"{alias}_v1"])  # retained by the switch; frees the small heap for the kill run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--url", default=os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9250"))
    parser.add_argument("--no-kill", action="store_true", help="skip the kill -9 run")
    parser.add_argument("--no-compare", action="store_true", help="skip the bare/blue_green comparison")
    parser.add_argument("-v", "--verbose", action="store_true", help="the adapter's log (phases, progress, ETA)")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(format="%(asctime)s %(message)s")
        logging.getLogger("polymigrate").setLevel(logging.INFO)
    api = SearchApi.from_url(args.url, timeout=600)
    prefix = f"bench-{uuid.uuid4().hex[:6]}-"
    alias, ledger = f"{prefix}products", f".polymigrate-{prefix}ledger"
    n = args.docs
    print(f"{api.server.label} at {api.where}: {n:,} documents, batches of {BATCH}", flush=True)
    if "--docs" not in sys.argv:
        print("(about 15 minutes on the 2-core test machine: load, bare reindex, blue_green, kill -9 + rerun)", flush=True)
    try:
        secs = load(api, f"{alias}_v1", alias, n)
        print(f"loaded in {secs:.1f}s ({n / secs:,.0f} docs/s)", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            if not args.no_compare:
                compare(api, args.url, Path(tmp) / "es", prefix, ledger, alias, n)
            if not args.no_kill:
                k = killed_and_rerun(api, args.url, step_file(Path(tmp) / "es", 2, alias), ledger, alias, n)
                print(f"kill -9 after {k['killed_after_s']:.1f}s ({k['killed_at_docs']:,} documents copied), rerun "
                      f"exit {k['rerun_exit']}, re-attached to the task: {k['reattached']}; total {k['total_s']:.1f}s; "
                      f"alias on {k['alias_on']} with {k['count']:,} documents (index holds {k['index_count']:,})"
                      + (f"\n{k['error']}" if k["error"] else ""))
    finally:
        cleanup(api, prefix)
        api.close()


if __name__ == "__main__":
    main()
