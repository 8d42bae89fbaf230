"""Declared aliases (mappings, settings) → generated step files, applied by the project's own adapter on
the real OpenSearch (and Elasticsearch with ES_URL): the alias's index ends equal to the declaration, a
second diff is empty, a change that needs a reindex is a blue_green, lint reads every generated file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from polymigrate.executor import migrate
from polymigrate.lint.engine import lint_file
from polymigrate.schemadiff import NamingContext
from polymigrate.schemadiff.elasticsearch import AliasDecl, flat_settings, generate, normal_mapping, read_alias

from tests.integration.adapters.es_helpers import PAST_MS, adapter, ctx, docs, migrations

pytestmark = pytest.mark.integration

PRODUCTS = {
    "settings": {"number_of_shards": 1, "number_of_replicas": 0},
    "mappings": {"dynamic": "strict", "properties": {
        "sku": {"type": "keyword"},
        "name": {"type": "text"},
        "price": {"type": "float"},
        "updated_at": {"type": "date"}}},
    "blue_green": {"catch_up": {"field": "updated_at"}, "verify": {"query": {"exists": {"field": "price"}}}},
}


def declare(domain: Path, alias: str, decl: dict) -> Path:
    schema = domain / "elasticsearch" / "schema"
    schema.mkdir(parents=True, exist_ok=True)
    (schema / "products.yaml").write_text(yaml.safe_dump({"alias": alias, **decl}, sort_keys=False))
    return domain


def step(t, domain: Path, version: str, description: str):
    """Generate the next file, lint it, apply it through the adapter; (steps, notes, lint rules)."""
    folder = domain / "elasticsearch"
    result = generate(t.url, domain, naming=NamingContext(folder, version, description))
    assert not result.refusals and len(result.files) == 1, result
    f = result.files[0]
    ms = migrations(folder, {f.name: f.text})
    rules = {x.rule for x in lint_file(next(m for m in ms if m.path.name == f.name), search=t.api).findings}
    a = adapter(t)
    try:
        result = migrate(a, ms, ctx())
    finally:
        a.close()
    assert [str(x["version"]) for x in result.applied] == [version], result
    return json.loads(f.text)["steps"], f.notes, rules


def assert_converged(t, domain: Path, alias: str, decl: dict, version: str) -> None:
    live = read_alias(t.api, alias)
    assert live["mappings"] == normal_mapping(decl["mappings"])
    want = flat_settings(decl["settings"])
    assert {k: live["settings"].get(k) for k in want} == want
    again = generate(t.url, domain, naming=NamingContext(domain / "elasticsearch", version, "again"))
    assert again.empty and not again.refusals, again.files and again.files[0].text


def test_declared_alias_from_empty_then_additive_then_reindex(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    domain = tmp_path / "shop"

    # 1. from empty: the index behind a new alias, as the samples' first files do
    declare(domain, alias, PRODUCTS)
    steps, notes, rules = step(t, domain, "1", "products")
    assert steps == [{"create_index": {"index": f"{alias}_v1", "body": {k: PRODUCTS[k] for k in ("settings", "mappings")}}},
                     {"switch_alias": {"alias": alias, "from": None, "to": f"{alias}_v1"}}]
    assert_converged(t, domain, alias, PRODUCTS, "2")
    t.bulk({"_index": alias, "_id": f"p{i}", "_source": {"sku": f"s{i}", "name": f"product {i}", "price": i / 10,
                                                          "updated_at": PAST_MS + i}} for i in range(300))

    # 2. additive: a new field, a multi-field, an updatable parameter, a dynamic setting → in place
    v2 = json.loads(json.dumps(PRODUCTS))
    v2["mappings"]["properties"]["barcode"] = {"type": "keyword", "ignore_above": 64}
    v2["mappings"]["properties"]["name"] = {"type": "text", "fields": {"raw": {"type": "keyword", "ignore_above": 256}}}
    v2["settings"]["refresh_interval"] = "5s"
    declare(domain, alias, v2)
    steps, notes, rules = step(t, domain, "2", "barcode and raw names")
    assert [next(iter(s)) if "method" not in s else "request" for s in steps] == ["put_mapping", "request"]
    assert set(steps[0]["put_mapping"]["body"]["properties"]) == {"barcode", "name"}
    assert steps[1] == {"method": "PUT", "path": f"/{alias}/_settings", "body": {"index.refresh_interval": "5s"}}
    assert "es-write-to-concrete-index" not in rules and "es-field-type-change-without-reindex" not in rules
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v1"]  # no new index
    assert_converged(t, domain, alias, v2, "3")

    # 3. a type change (and a static setting) cannot happen in place → one blue_green with the declaration
    v3 = json.loads(json.dumps(v2))
    v3["mappings"]["properties"]["price"] = {"type": "scaled_float", "scaling_factor": 100}
    v3["settings"]["analysis"] = {"analyzer": {"folded": {"type": "custom", "tokenizer": "standard",
                                                          "filter": ["lowercase", "asciifolding"]}}}
    del v3["settings"]["refresh_interval"]
    declare(domain, alias, v3)
    steps, notes, rules = step(t, domain, "3", "exact prices")
    assert list(steps[0]) == ["blue_green"] and len(steps) == 1
    bg = steps[0]["blue_green"]
    assert bg["catch_up"] == {"field": "updated_at"} and bg["body"]["mappings"] == v3["mappings"]
    why = " ".join(notes)
    assert "price: type float → scaled_float" in why and "setting index.analysis" in why
    assert "es-blue-green-catch-up-unset" not in rules
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v2"]
    assert len(docs(t, alias)) == 300
    assert_converged(t, domain, alias, v3, "4")
    assert "index.refresh_interval" not in read_alias(t.api, alias)["settings"]  # no longer declared: default


def test_removing_a_setting_resets_it_and_removing_a_field_reindexes(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    domain = tmp_path / "shop"
    v1 = json.loads(json.dumps(PRODUCTS))
    v1["settings"]["refresh_interval"] = "30s"
    v1["mappings"]["properties"]["legacy_code"] = {"type": "keyword"}
    declare(domain, alias, v1)
    step(t, domain, "1", "products")

    v2 = json.loads(json.dumps(PRODUCTS))
    v2["mappings"]["properties"]["legacy_code"] = {"type": "keyword"}
    declare(domain, alias, v2)
    steps, _, _ = step(t, domain, "2", "default refresh")
    assert steps == [{"method": "PUT", "path": f"/{alias}/_settings", "body": {"index.refresh_interval": None}}]
    assert_converged(t, domain, alias, v2, "3")

    declare(domain, alias, PRODUCTS)  # legacy_code is gone from the declaration
    steps, notes, _ = step(t, domain, "3", "without legacy code")
    assert list(steps[0]) == ["blue_green"]
    assert any("legacy_code: removed" in n for n in notes)
    assert_converged(t, domain, alias, PRODUCTS, "4")


def test_a_blue_green_without_catch_up_is_said_in_the_notes_and_by_lint(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    domain = tmp_path / "shop"
    bare = {k: v for k, v in PRODUCTS.items() if k != "blue_green"}
    declare(domain, alias, bare)
    step(t, domain, "1", "products")
    changed = json.loads(json.dumps(bare))
    changed["mappings"]["properties"]["sku"] = {"type": "text"}
    declare(domain, alias, changed)
    folder = domain / "elasticsearch"
    result = generate(t.url, domain, naming=NamingContext(folder, "2", "sku as text"))
    f = result.files[0]
    assert any("no blue_green.catch_up declared" in n for n in f.notes)
    m = next(m for m in migrations(folder, {f.name: f.text}) if m.path.name == f.name)
    assert "es-blue-green-catch-up-unset" in {x.rule for x in lint_file(m, search=t.api).findings}


def test_an_index_where_the_alias_should_be_is_refused_by_name(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    t.api.create_index(alias, {})
    domain = declare(tmp_path / "shop", alias, PRODUCTS)
    result = generate(t.url, domain, naming=NamingContext(None, "1", "products"))
    assert result.empty and "products.yaml" in result.refusals[0] and "is an index, not an alias" in result.refusals[0]


def test_declared_files_are_checked_with_file_and_line(tmp_path):
    from polymigrate.errors import SpecError

    schema = tmp_path / "elasticsearch" / "schema"
    schema.mkdir(parents=True)
    (schema / "products.yaml").write_text("settings: {}\nmapings: {}\nblue_green:\n  catch_up: sometimes\n")
    (schema / "Bad.yaml").write_text("mappings: {}\n")
    with pytest.raises(SpecError) as err:
        generate("http://127.0.0.1:9", tmp_path, naming=NamingContext(None, "1", "x"))
    text = str(err.value)
    assert "products.yaml:2: unknown key 'mapings'" in text
    assert "products.yaml:3: blue_green:" in text and "catch_up" in text
    assert "Bad.yaml" in text and "upper-case" in text
    assert AliasDecl.model_validate({"alias": "ok"}).blue_green == {}


def test_polymigrate_diff_prints_the_blue_green_with_its_reasons_and_lint(search_target, tmp_path):
    from typer.testing import CliRunner

    from polymigrate.cli import app

    t = search_target
    alias = t.name("products")
    domain = tmp_path / "shop"
    declare(domain, alias, PRODUCTS)
    step(t, domain, "1", "products")
    changed = json.loads(json.dumps(PRODUCTS))
    changed["mappings"]["properties"]["sku"] = {"type": "text"}
    declare(domain, alias, changed)
    out = CliRunner().invoke(app, ["diff", "--current", t.url, "--desired", str(domain), "--description", "sku text"])
    assert out.exit_code == 0, out.output
    assert "-- ===== 1-sku-text.json" in out.output and '"blue_green"' in out.output
    assert "sku:typekeyword→text" in "".join(out.output.split())  # rich wraps long lines


def _warehousing(t, tmp_path):
    from tests.conftest import SPECS
    from tests.integration.adapters.test_elasticsearch_samples import sample_files

    alias = t.prefix + "products"
    sample = yaml.safe_load((SPECS / "warehousing" / "elasticsearch" / "schema" / "products.yaml").read_text())
    return alias, sample, declare(tmp_path / "shop", alias, sample), sample_files("warehousing", t.prefix)


def test_the_warehousing_sample_declaration_is_what_its_migrations_build(search_target, tmp_path):
    from tests.integration.adapters.es_helpers import run

    t = search_target
    alias, sample, domain, files = _warehousing(t, tmp_path)
    run(t, tmp_path / "all", files)
    assert generate(t.url, domain, naming=NamingContext(None, "5", "again")).empty


def test_from_the_warehousing_samples_first_file_the_diff_is_its_blue_green(search_target, tmp_path):
    from tests.integration.adapters.es_helpers import run

    t = search_target
    alias, sample, domain, files = _warehousing(t, tmp_path)
    run(t, domain / "elasticsearch", {"1-create-products-v1.json": files["1-create-products-v1.json"]})
    t.bulk({"_index": alias, "_id": f"sku-{i}", "_source": {"sku": f"sku-{i}", "name": f"p {i}", "price": i / 4,
                                                             "currency": "EUR", "warehouses": ["w1"],
                                                             "updated_at": PAST_MS + i}} for i in range(200))
    steps, notes, rules = step(t, domain, "2", "products v2")
    assert list(steps[0]) == ["blue_green"] and len(steps) == 1
    assert steps[0]["blue_green"]["catch_up"] == {"field": "updated_at", "overlap": "1m"}
    why = " ".join(notes)
    assert "price: type float → scaled_float" in why and "setting index.analysis" in why
    assert not {"es-blue-green-catch-up-unset", "es-field-type-change-without-reindex"} & rules
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v2"] and len(docs(t, alias)) == 200
    assert_converged(t, domain, alias, sample, "3")
