"""Shared pieces of the Elasticsearch/OpenSearch adapter tests (not a test module)."""

from __future__ import annotations

import json
from pathlib import Path

from polymigrate.adapters.elasticsearch.adapter import ElasticsearchAdapter
from polymigrate.catalog import discover
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext

PAST_MS = 1_700_000_000_000  # documents seeded "long ago", so a catch-up pass has nothing to re-copy
PRODUCTS_V1 = {"dynamic": "strict", "properties": {
    "sku": {"type": "keyword"}, "price": {"type": "float"}, "currency": {"type": "keyword"},
    "updated_at": {"type": "date"}}}
PRODUCTS_V2 = {"dynamic": "strict", "properties": {
    "sku": {"type": "keyword"}, "price": {"type": "scaled_float", "scaling_factor": 100},
    "currency": {"type": "keyword"}, "updated_at": {"type": "date"}}}


def ctx(**kw) -> RunContext:
    return RunContext(**{"domain": "shop", "environment": "testing", "region": "r1", "actor": "tester@host",
                         "run_id": "run-1", "lock_wait_seconds": 30, **kw})


def step_file(*steps: dict, description: str = "") -> str:
    return json.dumps({"description": description, "steps": list(steps)}, indent=2) + "\n"


def seed(t, alias: str, n: int, *, mapping: dict = PRODUCTS_V1, index: str | None = None, start: int = 0) -> str:
    """``<alias>_v1`` (or ``index``) with ``n`` products behind ``alias``; the index name."""
    index = index or f"{alias}_v1"
    t.api.create_index(index, {"settings": {"number_of_shards": 1, "number_of_replicas": 0},
                               "mappings": mapping})
    t.api.update_aliases([{"add": {"index": index, "alias": alias}}])
    if n:
        t.bulk({"_index": index, "_id": f"p{i}", "_source": {"sku": f"sku-{i}", "price": round(i / 10, 2),
                                                             "currency": "EUR", "updated_at": PAST_MS + i}}
               for i in range(start, start + n))
    return index


def adapter(t, **kw) -> ElasticsearchAdapter:
    kw.setdefault("poll_seconds", 0.2)
    return ElasticsearchAdapter.from_url(t.url, domain="shop", settings=t.settings(), **kw)


def migrations(folder: Path, files: dict[str, str]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    cat = discover("shop", "elasticsearch", folder)
    assert not cat.problems, cat.problems
    return cat.applicable("elasticsearch")


def run(t, folder: Path, files: dict[str, str], **kw):
    a = adapter(t, **kw)
    try:
        return migrate(a, migrations(folder, files), ctx())
    finally:
        a.close()


def docs(t, index: str) -> dict[str, dict]:
    """Every document of an index (or alias): id → source."""
    t.api.refresh(index)
    hits = t.api.search(index, {"size": 10000, "query": {"match_all": {}}})["hits"]["hits"]
    return {h["_id"]: h["_source"] for h in hits}
