"""The shared adapter conformance suite on OpenSearch, and on Elasticsearch when ES_URL is set."""

from __future__ import annotations

import json

import pytest

from polymigrate.adapters.elasticsearch.adapter import ElasticsearchAdapter
from tests.conformance.adapter_suite import AdapterConformance, AdapterKit

pytestmark = pytest.mark.integration


def step_file(*steps: dict) -> str:
    return json.dumps({"steps": list(steps)}, indent=2) + "\n"


class TestElasticsearchConformance(AdapterConformance):
    @pytest.fixture
    def kit(self, search_target, tmp_path):
        t = search_target
        items = t.name("items")
        return AdapterKit(
            technology="elasticsearch",
            make_adapter=lambda: ElasticsearchAdapter.from_url(t.url, domain="conformance", settings=t.settings()),
            good_files={
                "1-items-template.json": step_file({"index_template": {"name": items, "body": {
                    "index_patterns": [f"{items}_v*"],
                    "template": {"mappings": {"properties": {"sku": {"type": "keyword"}}}}}}}),
                "2-items-index.json": step_file({"create_index": {"index": f"{items}_v1"}},
                                                {"switch_alias": {"alias": items, "from": None, "to": f"{items}_v1"}}),
            },
            # refused before anything is sent: a keyword cannot become a long in place
            broken_file=("3-sku-as-number.json", step_file(
                {"put_mapping": {"index": items, "body": {"properties": {"sku": {"type": "long"}}}}})),
            tmp_path=tmp_path,
            edit=lambda text: text.replace("{", '{"description": "edited after it ran", ', 1),
            # a mapping put on an index nobody created; the fix names the one the files made
            nothing_run_file=("3-add-price.json",
                              step_file({"put_mapping": {"index": t.name("itmes"),
                                                         "body": {"properties": {"price": {"type": "float"}}}}}),
                              step_file({"put_mapping": {"index": items,
                                                         "body": {"properties": {"price": {"type": "float"}}}}})),
        )
