"""Issue 26, item 3: how long the MongoDB and Elasticsearch/OpenSearch generators take on a declared
state of N collections / aliases, from empty and once converged (the second diff, which is what a
drift check or a review re-run pays). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_schemadiff_documents.py [--objects 40] [--indexes 4] [--fields 30]

Runs against MONGO_URI and OPENSEARCH_URL (``make engines``), in a fresh database and under a fresh
name prefix, both removed at the end. Applying the generated files goes through the adapters, as a
user's ``polymigrate migrate`` would.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import MONGO_URI, OPENSEARCH_URL, mongo_url_for  # noqa: E402  (reads .engines/env)


def _apply(technology: str, url: str, folder: Path, extra: list[str]) -> float:
    from typer.testing import CliRunner

    from polymigrate.cli import app

    started = time.perf_counter()
    out = CliRunner().invoke(app, ["migrate", "--url", url, "--locations", str(folder), "-d", "bench", *extra])
    if out.exit_code != 0:
        raise SystemExit(f"{technology}: migrate failed: {out.output}")
    return time.perf_counter() - started


def _timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def mongo(n: int, k: int, root: Path) -> dict:
    import pymongo

    from polymigrate.schemadiff import NamingContext
    from polymigrate.schemadiff.mongodb import generate

    db = f"pm_bench_diff_{uuid.uuid4().hex[:8]}"
    url = mongo_url_for(db)
    schema = root / "mongodb" / "schema"
    schema.mkdir(parents=True)
    for c in range(n):
        indexes = [{"name": f"i{i}", "key": {f"f{i}": 1, "at": -1}, **({"unique": True} if i == 0 else {})}
                   for i in range(k)]
        (schema / f"c{c:03d}.yaml").write_text(yaml.safe_dump({"indexes": indexes}))
    folder = root / "mongodb"
    try:
        first, t_first = _timed(lambda: generate(url, root, naming=NamingContext(folder, "1", "bench")))
        (folder / first.files[0].name).write_text(first.files[0].text)
        t_apply = _apply("mongodb", url, folder, [])
        second, t_second = _timed(lambda: generate(url, root, naming=NamingContext(folder, "2", "again")))
        return {"objects": n, "from empty": t_first, "apply": t_apply, "second diff": t_second,
                "second diff empty": second.empty, "commands": first.files[0].text.count('"createIndexes"') +
                first.files[0].text.count('"create"')}
    finally:
        pymongo.MongoClient(MONGO_URI).drop_database(db)


def opensearch(n: int, fields: int, root: Path) -> dict:
    from polymigrate.schemadiff import NamingContext
    from polymigrate.schemadiff.elasticsearch import generate
    from tests.conftest import SearchTarget

    t = SearchTarget("opensearch", OPENSEARCH_URL)
    schema = root / "elasticsearch" / "schema"
    schema.mkdir(parents=True)
    for a in range(n):
        props = {f"f{i}": {"type": ("keyword", "long", "date", "text")[i % 4]} for i in range(fields)}
        (schema / f"a{a:03d}.yaml").write_text(yaml.safe_dump({
            "alias": t.name(f"a{a:03d}"), "settings": {"number_of_shards": 1, "number_of_replicas": 0},
            "mappings": {"dynamic": "strict", "properties": props}}))
    folder = root / "elasticsearch"
    try:
        first, t_first = _timed(lambda: generate(t.url, root, naming=NamingContext(folder, "1", "bench")))
        (folder / first.files[0].name).write_text(first.files[0].text)
        t_apply = _apply("elasticsearch", t.url, folder, ["--table", t.ledger])
        second, t_second = _timed(lambda: generate(t.url, root, naming=NamingContext(folder, "2", "again")))
        return {"objects": n, "from empty": t_first, "apply": t_apply, "second diff": t_second,
                "second diff empty": second.empty, "commands": first.files[0].text.count('"create_index"') * 2}
    finally:
        t.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=40)
    parser.add_argument("--indexes", type=int, default=4)
    parser.add_argument("--fields", type=int, default=30)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows["MongoDB protocol"] = mongo(args.objects, args.indexes, Path(tmp) / "m")
        rows["OpenSearch"] = opensearch(args.objects, args.fields, Path(tmp) / "e")
    print(f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'':22}{'objects':>8}{'commands':>10}{'from empty':>12}{'apply':>9}{'second diff':>13}  empty")
    for name, r in rows.items():
        print(f"{name:22}{r['objects']:>8}{r['commands']:>10}{r['from empty']:>11.2f}s{r['apply']:>8.2f}s"
              f"{r['second diff']:>12.2f}s  {r['second diff empty']}")


if __name__ == "__main__":
    main()
