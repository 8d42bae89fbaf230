"""The sample Elasticsearch migrations (warehousing, centralized-dashboard, social-commerce) run for real.

The server is shared, so every index, alias and template name of the samples gets this test's
prefix; everything else (mappings, analyzers, steps, their order) is the sample files' own.
"""

from __future__ import annotations

import json
import time

import pytest

from polymigrate.catalog import discover_domain
from polymigrate.commands import validate_project

from tests.conftest import SPECS
from tests.integration.adapters.es_helpers import docs, run

pytestmark = pytest.mark.integration

_NAMES = {"create_index": ("index",), "index_template": ("name", "composed_of"), "component_template": ("name",),
          "put_index_template": ("name",), "put_mapping": ("index",), "switch_alias": ("alias", "from", "to"),
          "blue_green": ("alias", "source"), "delete_index": ("index",), "reindex": ("source", "dest")}


def prefixed(text: str, p: str) -> str:
    """A sample file with every index, alias and template name it names prefixed by ``p``."""
    data = json.loads(text)
    for step in data["steps"]:
        (kind, args), = step.items()
        for key in _NAMES.get(kind, ()):
            value = args.get(key)
            if isinstance(value, str):
                args[key] = p + value
            elif isinstance(value, list):
                args[key] = [p + v for v in value]
        body = args.get("body") or {}
        if isinstance(body, dict) and "index_patterns" in body:
            body["index_patterns"] = [p + v for v in body["index_patterns"]]
    return json.dumps(data, indent=2)


def sample_files(domain: str, p: str) -> dict[str, str]:
    v = validate_project(SPECS)
    assert not v.problems, v.problems
    cat = discover_domain(v.project.domains[domain])
    return {m.script: prefixed(m.text, p) for m in cat.versioned("elasticsearch")}


def test_warehousing_products_v2_blue_green_and_stock_event_templates(search_target, tmp_path):
    t = search_target
    p = t.prefix
    files = sample_files("warehousing", p)
    assert list(files) == ["1-create-products-v1.json", "2-products-v2-reindex.json",
                           "3-stock-events-template.json", "4-stock-events-shared-settings.json"]
    first = run(t, tmp_path / "es", {k: files[k] for k in list(files)[:1]})
    assert [a["version"] for a in first.applied] == ["1"]
    now = int(time.time() * 1000)
    t.bulk({"_index": p + "products", "_id": f"sku-{i}", "_source": {
        "sku": f"sku-{i}", "name": f"Laptop stand {i}" if i % 2 else f"Desk lamp {i}", "price": 19.99 + i,
        "currency": "EUR", "warehouses": ["lyon", "cairo"], "updated_at": now - 3_600_000 + i}} for i in range(500))

    rest = run(t, tmp_path / "es", files)
    assert [a["version"] for a in rest.applied] == ["2", "3", "4"]
    assert t.api.alias_targets(p + "products") == {p + "products_v2": {"is_write_index": True}}
    assert t.api.count(p + "products") == 500 and t.api.count(p + "products_v1") == 500  # v1 retained
    hits = t.api.search(p + "products", {"query": {"match": {"name.autocomplete": "lapt"}}, "size": 0})
    assert hits["hits"]["total"]["value"] == 250           # the new analyzer serves through the alias
    props = t.api.get_mapping(p + "products")[p + "products_v2"]["mappings"]["properties"]
    assert props["price"]["type"] == "scaled_float" and props["barcode"] == {"type": "keyword"}
    assert docs(t, p + "products")["sku-7"]["price"] == pytest.approx(26.99)

    t.api.create_index(p + "stock-events-2026.11")
    idx = t.api.get_settings(p + "stock-events-2026.11")[p + "stock-events-2026.11"]["settings"]
    assert idx["index.refresh_interval"] == "5s"              # from the component template
    assert t.api.get_mapping(p + "stock-events-2026.11")[p + "stock-events-2026.11"]["mappings"]["properties"][
        "delta"] == {"type": "integer"}
    assert run(t, tmp_path / "es", files).applied == []       # a second run changes nothing


def test_centralized_dashboard_metrics_template_index_and_alias(search_target, tmp_path):
    t = search_target
    p = t.prefix
    files = sample_files("centralized-dashboard", p)
    result = run(t, tmp_path / "es", files)
    assert [a["version"] for a in result.applied] == ["1", "2", "3"]
    assert list(t.api.alias_targets(p + "dashboard-metrics")) == [p + "dashboard-metrics-000001"]
    props = t.api.get_mapping(p + "dashboard-metrics")[p + "dashboard-metrics-000001"]["mappings"]["properties"]
    assert props["region"] == {"type": "keyword"} and props["value"] == {"type": "double"}
    t.api.request("PUT", f"/{p}dashboard-metrics/_doc/1", params={"refresh": "true"},
                  body={"at": "2026-11-30T00:00:00Z", "domain": "warehousing", "region": "western_europe",
                        "metric": "orders", "value": 3})
    assert t.api.count(p + "dashboard-metrics") == 1


def test_social_commerce_people_search_behind_its_alias(search_target, tmp_path):
    t = search_target
    p = t.prefix
    files = sample_files("social-commerce", p)
    result = run(t, tmp_path / "es", files)
    # expand (people_v1 behind the alias), then the release's migrate step: blue-green to people_v2
    assert [a["version"] for a in result.applied] == ["1", "2"]
    assert list(t.api.alias_targets(p + "people")) == [p + "people_v2"]
    t.api.request("PUT", f"/{p}people/_doc/7", params={"refresh": "true"},
                  body={"user_id": 7, "handle": "ada", "full_name": "Ada Lovelace", "followers": 3,
                        "updated_at": "2026-11-30T00:00:00Z"})
    found = t.api.request("GET", f"/{p}people/_search", body={"query": {"match": {"full_name": "lovelace"}}})
    assert [h["_id"] for h in found["hits"]["hits"]] == ["7"]
    # what people_v2 adds: the name answers while it is being typed
    typed = t.api.request("GET", f"/{p}people/_search", body={"query": {"multi_match": {
        "query": "ada lov", "type": "bool_prefix",
        "fields": ["full_name.prefix", "full_name.prefix._2gram", "full_name.prefix._3gram"]}}})
    assert [h["_id"] for h in typed["hits"]["hits"]] == ["7"]
    # strict mapping: a field the release did not declare (first_name is PostgreSQL's old column) is refused
    from polymigrate.adapters.elasticsearch.api import SearchError
    with pytest.raises(SearchError):
        t.api.request("PUT", f"/{p}people/_doc/8", body={"user_id": 8, "first_name": "Grace"})
