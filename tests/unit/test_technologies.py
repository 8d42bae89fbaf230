"""Each technology package's descriptor, and the tables built from them: the values are those the
tables held literally before they were built from the descriptors (issue 25, item 1)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from polymigrate.adapters import REGISTRY, TECHNOLOGIES, Technology


def test_every_technology_package_exports_its_descriptor_under_its_registry_key():
    import importlib

    for key, tech in TECHNOLOGIES.items():
        assert isinstance(tech, Technology)
        assert importlib.import_module(f"polymigrate.adapters.{key}").DESCRIPTOR is tech
        assert tech.adapter.startswith(f"polymigrate.adapters.{key}.")
    assert list(TECHNOLOGIES) == ["postgresql", "mongodb", "redis", "elasticsearch"]


def test_the_registry_and_the_catalogs_extensions():
    from polymigrate.catalog import EXTENSIONS

    assert REGISTRY == {
        "postgresql": "polymigrate.adapters.postgresql.adapter:PostgresAdapter",
        "mongodb": "polymigrate.adapters.mongodb.adapter:MongoAdapter",
        "redis": "polymigrate.adapters.redis.adapter:RedisAdapter",
        "elasticsearch": "polymigrate.adapters.elasticsearch.adapter:ElasticsearchAdapter",
    }
    assert EXTENSIONS == {"postgresql": (".sql",), "mongodb": (".json", ".py", ".js"), "redis": (".lua",),
                          "elasticsearch": (".json",)}


def test_the_connection_tables():
    from polymigrate.connections import DEFAULT_PORTS, EXTRAS, SCHEMES

    assert SCHEMES == {"postgresql": "postgresql", "postgres": "postgresql", "redis": "redis", "rediss": "redis",
                       "mongodb": "mongodb", "mongo": "mongodb", "http": "elasticsearch", "https": "elasticsearch",
                       "elasticsearch": "elasticsearch", "opensearch": "elasticsearch"}
    assert DEFAULT_PORTS == {"postgresql": 5432, "redis": 6379, "mongodb": 27017, "elasticsearch": 9200}
    assert EXTRAS == {
        "postgresql": {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "connect_timeout",
                       "application_name", "target_session_attrs", "keepalives", "keepalives_idle",
                       "keepalives_interval", "keepalives_count", "gssencmode", "channel_binding"},
        "redis": {"ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"},
        "mongodb": {"tls", "ssl", "tlsCAFile", "tlsCertificateKeyFile", "tlsAllowInvalidHostnames",
                    "tlsAllowInvalidCertificates", "tlsInsecure", "authSource", "authMechanism", "replicaSet",
                    "directConnection", "readPreference", "w", "journal", "retryWrites", "retryReads",
                    "connectTimeoutMS", "socketTimeoutMS", "serverSelectionTimeoutMS", "heartbeatFrequencyMS",
                    "appName", "compressors", "loadBalanced", "srv"},
        "elasticsearch": {"use_ssl", "verify_certs", "ca_certs", "timeout", "http_compress"},
    }
    assert all(isinstance(v, frozenset) for v in EXTRAS.values())


def test_the_new_file_templates():
    from polymigrate.adapters.redis.templates import new_file_template
    from polymigrate.cli.core import _TEMPLATES

    assert _TEMPLATES == {
        "postgresql": "-- {description}\n-- polymigrate: lock_timeout=5s\n\n",
        "mongodb": '{{\n  "description": "{description}",\n  "commands": [\n  ]\n}}\n',
        "redis": new_file_template(),
        "elasticsearch": '{{\n  "description": "{description}",\n  "steps": [\n  ]\n}}\n',
    }


def test_the_migration_operators_their_colours_and_the_client_factories():
    from polymigrate.blueprint import MIGRATION_OPERATORS

    ops = "polymigrate_airflow.operators"
    assert MIGRATION_OPERATORS == {"postgresql": f"{ops}.PostgresMigrationOperator",
                                   "mongodb": f"{ops}.MongoMigrationOperator",
                                   "redis": f"{ops}.RedisMigrationOperator",
                                   "elasticsearch": f"{ops}.ElasticsearchMigrationOperator"}
    pytest.importorskip("airflow")
    from polymigrate_airflow import connections, operators

    colours = {name: getattr(operators, name).ui_color for name in
               ("PostgresMigrationOperator", "MongoMigrationOperator", "RedisMigrationOperator",
                "ElasticsearchMigrationOperator")}
    assert colours == {"PostgresMigrationOperator": "#cfe3f3", "MongoMigrationOperator": "#d9ead3",
                       "RedisMigrationOperator": "#f6d2cc", "ElasticsearchMigrationOperator": "#fff2cc"}
    assert connections.CLIENT_FACTORIES == {"postgresql": connections.postgres_client,
                                            "redis": connections.redis_client,
                                            "elasticsearch": connections.search_client,
                                            "mongodb": connections.mongo_client}


def test_the_file_naming_the_json_formats_and_lints_live_state():
    from polymigrate.catalog import Kind, parse_name
    from polymigrate.spec.formats import FORMATS, ElasticsearchStepFile, MongoCommandFile

    assert FORMATS == {"mongodb": MongoCommandFile, "elasticsearch": ElasticsearchStepFile}
    assert {k: t.naming for k, t in TECHNOLOGIES.items()} == {"postgresql": "flyway", "mongodb": "dash",
                                                              "redis": "dash", "elasticsearch": "dash"}
    assert parse_name("postgresql", "U2__drop_x.sql")[0] is Kind.UNDO
    assert parse_name("redis", "1.2-add-index.lua")[1:] == (parse_name("mongodb", "1.2-add-index.js")[1], "add index")
    with pytest.raises(ValueError, match="expected <version>-<description>.json"):
        parse_name("elasticsearch", "V1__x.json")
    for key, t in TECHNOLOGIES.items():
        if t.lint_state:  # every named reader exists, under the key the rules read
            import importlib

            module, _, name = t.lint_state[1].partition(":")
            assert callable(getattr(importlib.import_module(module), name)), key
    assert {k: t.lint_state[0] for k, t in TECHNOLOGIES.items() if t.lint_state} == {"mongodb": "mongo_stats",
                                                                                    "elasticsearch": "es_live"}


def test_the_ledger_types_the_execution_order_and_the_spec_literal(tmp_path):
    import typing

    import polymigrate
    from polymigrate.catalog import discover
    from polymigrate.spec.models import Technology as SpecTechnology

    for tech, name, text in (("postgresql", "V1__a.sql", "SELECT 1;"), ("postgresql", "U1__a.sql", "SELECT 1;"),
                             ("mongodb", "1-a.js", "module.exports = {};"), ("mongodb", "2-b.py", "def up(db): pass"),
                             ("mongodb", "3-c.json", '{"commands": [{"create": "x"}]}'), ("redis", "1-a.lua", "return 1"),
                             ("elasticsearch", "1-a.json", '{"steps": [{"method": "GET", "path": "/"}]}')):
        (tmp_path / tech).mkdir(exist_ok=True)
        (tmp_path / tech / name).write_text(text)
    types = {m.script: m.ledger_type for tech in TECHNOLOGIES for m in
             discover("d", tech, tmp_path / tech).migrations.get(tech, [])}
    assert types == {"V1__a.sql": "SQL", "U1__a.sql": "UNDO_SQL", "1-a.js": "MONGO_JS", "2-b.py": "MONGO_PY",
                     "3-c.json": "MONGO_JSON", "1-a.lua": "LUA", "1-a.json": "ES"}
    assert polymigrate.TECHNOLOGIES == ("postgresql", "mongodb", "redis", "elasticsearch")  # the registration order
    assert typing.get_args(SpecTechnology) == polymigrate.TECHNOLOGIES


def test_a_technology_operator_is_a_class_of_its_own_in_the_operators_module():
    pytest.importorskip("airflow")
    from polymigrate_airflow import operators

    for t in TECHNOLOGIES.values():
        cls = getattr(operators, t.operator)
        assert cls.__module__ == "polymigrate_airflow.operators" and cls.__name__ == t.operator
        assert issubclass(cls, operators.MigrationOperator) and cls is not operators.MigrationOperator


@pytest.mark.parametrize("module", ["polymigrate", "polymigrate.spec.models", "polymigrate.catalog", "polymigrate.spec.formats", "polymigrate.lint.engine", "polymigrate.adapters", "polymigrate.adapters.base",
                                    "polymigrate.adapters.redis.templates", "polymigrate.adapters.postgresql.statements",
                                    "polymigrate.connections", "polymigrate.blueprint"])
def test_each_module_imports_first_in_a_fresh_interpreter_without_a_driver(module):
    """No import cycle through the descriptors whatever is imported first, and reading the descriptors
    imports no technology's driver."""
    code = (f"import sys, {module}\n"
            "drivers = {'pymongo', 'bson', 'redis', 'elasticsearch', 'opensearchpy'} & set(sys.modules)\n"
            "assert not drivers, drivers\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


FIFTH = """
import typing
import polymigrate.adapters as adapters
from polymigrate.adapters.technology import Technology

# what adapters/__init__.py's registration line does for a package polymigrate/adapters/toy/
toy = Technology(key="toy", adapter="polymigrate.adapters.toy.adapter:ToyAdapter", extensions=(".toy",),
                 schemes=("toy", "toys"), default_port=7777, extras=frozenset({"tls"}),
                 template="# {description}\\n", client_factory="toy_client", operator="ToyMigrationOperator",
                 ui_color="#eeeeee", ledger_type="TOY")
adapters.TECHNOLOGIES["toy"] = toy
adapters.REGISTRY["toy"] = toy.adapter

import polymigrate
from polymigrate import blueprint, connections
from polymigrate.catalog import EXTENSIONS, discover, parse_name
from polymigrate.cli.core import _TEMPLATES
from polymigrate.spec.models import Technology as SpecTechnology

assert EXTENSIONS["toy"] == (".toy",) and parse_name("toy", "1.2-first-table.toy")[2] == "first table"
assert connections.SCHEMES["toys"] == "toy" and connections.DEFAULT_PORTS["toy"] == 7777
assert connections.EXTRAS["toy"] == {"tls"}
assert blueprint.MIGRATION_OPERATORS["toy"] == "polymigrate_airflow.operators.ToyMigrationOperator"
assert _TEMPLATES["toy"] == "# {description}\\n"
assert polymigrate.TECHNOLOGIES[-1] == "toy" and "toy" in typing.get_args(SpecTechnology)
print("ok")
"""


def test_a_fifth_technology_registered_once_reaches_every_table_of_the_core():
    """docs/adapters.md's worked example: the descriptor, registered, is all the core's tables need."""
    proc = subprocess.run([sys.executable, "-c", FIFTH], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
