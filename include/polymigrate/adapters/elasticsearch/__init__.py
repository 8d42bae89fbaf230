"""The Elasticsearch / OpenSearch adapter (registry key ``elasticsearch``): ``adapter``
(``ElasticsearchAdapter``), the client wrapper (``api``), ledger, lease, steps and blue-green.

Only the descriptor is defined here, so reading ``steps`` (lint) does not import the adapter.
Imports are absolute: ``import elasticsearch`` inside this package is the client library, not this
package."""

from __future__ import annotations

from polymigrate.adapters.technology import Technology

DESCRIPTOR = Technology(
    key="elasticsearch",
    adapter="polymigrate.adapters.elasticsearch.adapter:ElasticsearchAdapter",
    extensions=(".json",),
    # http(s): Elasticsearch or OpenSearch, told apart by GET /
    schemes=("http", "https", "elasticsearch", "opensearch"),
    default_port=9200,
    extras=frozenset({"use_ssl", "verify_certs", "ca_certs", "timeout", "http_compress"}),
    template='{{\n  "description": "{description}",\n  "steps": [\n  ]\n}}\n',
    client_factory="search_client",
    operator="ElasticsearchMigrationOperator",
    ui_color="#fff2cc",
    ledger_type="ES",
    format_model="ElasticsearchStepFile",
    lint_state=("es_live", "polymigrate.lint.rules.elasticsearch:LiveIndices"),
)
