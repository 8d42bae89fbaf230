"""Issue 23.2: a blue-green reindex reports the documents it copied and the server's own time for
them, which become the ``reindex`` throughput metric (OpenSearch, and Elasticsearch with ES_URL)."""

from __future__ import annotations

from polymigrate import metrics
from tests.integration.adapters.es_helpers import PRODUCTS_V2, run, seed, step_file


def test_a_reindex_reports_its_documents_and_their_rate(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 1000)
    result = run(t, tmp_path / "m", {"1-products-v2.json": step_file(
        {"blue_green": {"alias": alias, "body": {"settings": {"number_of_shards": 1, "number_of_replicas": 0},
                                                 "mappings": PRODUCTS_V2}, "catch_up": "none"}})})
    (applied,) = result.applied
    reindexed = result.details[applied["script"]]["reindexed"]
    assert reindexed["documents"] == 1000 and reindexed["ms"] > 0  # the reindex task's own "took"
    (rate,) = [m for m in metrics.migrated("shop", "testing", "r1", "elasticsearch", None, result.applied, 0,
                                           details=result.details) if m.name == "polymigrate.migration.throughput"]
    assert rate.tags["operation"] == "reindex" and rate.value == round(1000 * 1000 / reindexed["ms"], 1)
