"""The Elasticsearch / OpenSearch adapter (registry key ``elasticsearch``): ``adapter``
(``ElasticsearchAdapter``), the client wrapper (``api``), ledger, lease, steps and blue-green.

Nothing is imported here, so reading ``steps`` (lint) does not import the adapter. Imports are
absolute: ``import elasticsearch`` inside this package is the client library, not this package."""
