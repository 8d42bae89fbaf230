"""The MongoDB adapter (registry key ``mongodb``): ``adapter`` (``MongoAdapter``), its ledger, lease,
server facts, document transform and the Node runner of migrate-mongo files (``js``, ``node/``).

Only the descriptor is defined here, so a module of this package does not import the adapter and
pymongo."""

from __future__ import annotations

from polymigrate.adapters.technology import Technology

DESCRIPTOR = Technology(
    key="mongodb",
    adapter="polymigrate.adapters.mongodb.adapter:MongoAdapter",
    extensions=(".json", ".py", ".js"),
    schemes=("mongodb", "mongo"),  # mongodb+srv too: the scheme is cut at '+'
    default_port=27017,
    # the Airflow layer's MONGO_EXTRAS; srv picks mongodb+srv
    extras=frozenset({"tls", "ssl", "tlsCAFile", "tlsCertificateKeyFile", "tlsAllowInvalidHostnames",
                      "tlsAllowInvalidCertificates", "tlsInsecure", "authSource", "authMechanism", "replicaSet",
                      "directConnection", "readPreference", "w", "journal", "retryWrites", "retryReads",
                      "connectTimeoutMS", "socketTimeoutMS", "serverSelectionTimeoutMS", "heartbeatFrequencyMS",
                      "appName", "compressors", "loadBalanced", "srv"}),
    template='{{\n  "description": "{description}",\n  "commands": [\n  ]\n}}\n',
    client_factory="mongo_client",
    operator="MongoMigrationOperator",
    ui_color="#d9ead3",
    ledger_type="MONGO",
    format_model="MongoCommandFile",
    lint_state=("mongo_stats", "polymigrate.lint.mongo_stats:MongoStats"),
)
