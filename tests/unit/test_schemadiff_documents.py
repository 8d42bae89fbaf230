"""The MongoDB and Elasticsearch generators' decisions on plain states (no server): declared files
checked with file and line; which change becomes which command or step. The integration tests
(test_schemadiff_mongodb.py, test_schemadiff_elasticsearch.py) apply the results on real servers."""

from __future__ import annotations

import pytest

from polymigrate.adapters.elasticsearch.steps import mapping_conflicts
from polymigrate.adapters.mongodb.server import ServerInfo
from polymigrate.errors import SpecError
from polymigrate.schemadiff import NamingContext
from polymigrate.schemadiff import elasticsearch as es
from polymigrate.schemadiff import mongodb as mongo

FERRET = ServerInfo(version="7.0.77", ferretdb_version="v1.24.2")
MONGO = ServerInfo(version="7.0.14")


def _declare(tmp_path, technology, files):
    schema = tmp_path / technology / "schema"
    schema.mkdir(parents=True)
    for name, text in files.items():
        (schema / name).write_text(text)
    return tmp_path


def test_mongodb_declarations_are_checked_with_file_and_line(tmp_path):
    root = _declare(tmp_path, "mongodb", {
        "posts.yaml": "indexes:\n  - {name: a, key: {a: 1}, uniqe: true}\n  - {key: {b: 2}}\nvalidationLevel: lax\n",
        "feed.yaml": "indexes:\n  - {name: x, key: {a: 1}}\n  - {name: x, key: {b: 1}}\n",
        "ids.yaml": "indexes:\n  - {key: {_id: 1}}\n",
        "sys.yaml": "collection: system.views\n",
        "list.yaml": "- a\n",
    })
    with pytest.raises(SpecError) as err:
        mongo.read_declared(root)
    text = str(err.value)
    assert "posts.yaml:2: unknown key 'indexes.0.uniqe'" in text
    assert "posts.yaml:3: indexes.1.key: Value error, key 'b': 2 is not a direction" in text
    assert "posts.yaml:4: validationLevel" in text
    assert "feed.yaml:1: indexes: Value error, two indexes are named 'x'" in text
    assert "ids.yaml:1: indexes: Value error, the _id_ index exists on every collection" in text
    assert "sys.yaml:1: collection" in text and "list.yaml:1: must be a mapping" in text


def test_mongodb_declared_names_default_as_mongodb_names_them(tmp_path):
    root = _declare(tmp_path, "mongodb", {"posts.yaml": "indexes:\n  - key: {author: 1, at: -1}\n"})
    assert mongo.read_declared(root)["posts"]["indexes"] == {"author_1_at_-1": {"name": "author_1_at_-1",
                                                                                "key": {"author": 1, "at": -1}}}


def _ix(name, key, **opts):
    return {"name": name, "key": key, **opts}


def test_mongodb_key_order_is_part_of_an_index_and_false_options_are_absent():
    a = mongo.normal_index({"v": 2, "name": "x", "key": {"a": 1, "b": -1}, "unique": False, "background": True})
    assert a == {"name": "x", "key": {"a": 1, "b": -1}}
    assert not mongo.same_index(a, _ix("x", {"b": -1, "a": 1}))
    assert mongo.same_index(a, _ix("x", {"a": 1.0, "b": -1}))


def test_a_mongodb_index_change_ferretdb_cannot_build_keeps_the_old_index():
    have = {"events": {"indexes": {"at": _ix("at", {"at": 1})}, "validation": {}}}
    want = {"events": {"indexes": {"at": _ix("at", {"at": 1}, expireAfterSeconds=60)}, "validation": {}}}
    commands, down, notes, refusals = mongo.plan(have, want, FERRET)
    assert commands == [] and "index at not generated: `createIndexes` with `expireAfterSeconds`" in refusals[0]
    commands, down, notes, refusals = mongo.plan(have, want, MONGO)
    assert commands == [{"dropIndexes": "events", "index": "at"},
                        {"createIndexes": "events", "indexes": [{**want["events"]["indexes"]["at"], "background": True}]}]
    assert down == [{"dropIndexes": "events", "index": "at"},
                    {"createIndexes": "events", "indexes": [{"name": "at", "key": {"at": 1}, "background": True}]}]
    assert not refusals and "changed (expireAfterSeconds None → 60)" in notes[0]


def test_mongodb_validators_on_a_real_mongodb_and_their_way_back():
    validation = mongo.normal_validation({"$jsonSchema": {"required": ["a"]}}, "moderate", None)
    have = {"c": {"indexes": {}, "validation": {}}}
    commands, down, _, refusals = mongo.plan(have, {"c": {"indexes": {}, "validation": validation}}, MONGO)
    assert commands == [{"collMod": "c", "validator": {"$jsonSchema": {"required": ["a"]}},
                         "validationLevel": "moderate", "validationAction": "error"}]
    assert down == [{"collMod": "c", "validator": {}, "validationLevel": "off"}] and not refusals
    commands, _, _, refusals = mongo.plan(have, {"c": {"indexes": {}, "validation": validation}}, FERRET)
    assert commands == [] and refusals[0].startswith("c: validator change not generated: `collMod`")


def test_ferretdb_ignores_sparse_so_it_is_compared_without_it():
    have = {"c": {"indexes": {"s": _ix("s", {"s": 1})}, "validation": {}}}
    want = {"c": {"indexes": {"s": _ix("s", {"s": 1}, sparse=True)}, "validation": {}}}
    commands, _, notes, _ = mongo.plan(have, want, FERRET)
    assert commands == [] and "ignores sparse" in notes[0]
    assert mongo.plan(have, want, MONGO)[0][0] == {"dropIndexes": "c", "index": "s"}


def test_file_names_follow_the_domains_scheme():
    assert mongo.file_name(NamingContext(None, "2.1", "Posts: by kind!")) == "2.1-posts-by-kind.json"
    assert es.file_name(NamingContext(None, "202612061700", "products v3")) == "202612061700-products-v3.json"


LIVE = {"index": "p_v1", "settings": {"index.number_of_shards": "1", "index.number_of_replicas": "1",
                                      "index.refresh_interval": "1s"},
        "mappings": es.normal_mapping({"dynamic": "strict", "_meta": {"polymigrate": {"blue_green": "x"}},
                                       "properties": {
                                           "sku": {"type": "keyword", "ignore_above": 64},
                                           "name": {"type": "text", "analyzer": "standard",
                                                    "fields": {"raw": {"type": "keyword"}}},
                                           "dims": {"properties": {"w": {"type": "float"}}},
                                           "price": {"type": "scaled_float", "scaling_factor": 100.0}}})}
BASE = {"dynamic": "strict", "properties": {
    "sku": {"type": "keyword", "ignore_above": 64},
    "name": {"type": "text", "analyzer": "standard", "fields": {"raw": {"type": "keyword"}}},
    "dims": {"type": "object", "properties": {"w": {"type": "float"}}},
    "price": {"type": "scaled_float", "scaling_factor": 100}}}


def _decl(settings=None, **props):
    mappings = {**BASE, "properties": {**BASE["properties"], **props}}
    return es.AliasDecl(alias="p", settings=settings if settings is not None else {"refresh_interval": "1s"},
                        mappings={k: v for k, v in mappings.items()},
                        blue_green={"catch_up": "freeze"})


def _kinds(steps):
    return [next(iter(s)) if "method" not in s else "request" for s in steps]


@pytest.mark.parametrize("change, kind", [
    ({}, []),                                                                   # the same (object type, 100 == 100.0)
    ({"barcode": {"type": "keyword"}}, ["put_mapping"]),                        # a new field
    ({"sku": {"type": "keyword", "ignore_above": 256}}, ["put_mapping"]),       # updatable in place
    ({"dims": {"properties": {"w": {"type": "float"}, "h": {"type": "float"}}}}, ["put_mapping"]),  # a sub-field
    ({"name": {"type": "text", "analyzer": "standard", "fields": {"raw": {"type": "keyword"},
                                                                  "en": {"type": "text", "analyzer": "english"}}}},
     ["put_mapping"]),                                                          # a multi-field
    ({"sku": {"type": "text"}}, ["blue_green"]),                                # type
    ({"name": {"type": "text", "analyzer": "english", "fields": {"raw": {"type": "keyword"}}}}, ["blue_green"]),
    ({"name": {"type": "text", "analyzer": "standard"}}, ["blue_green"]),       # a multi-field removed
    ({"price": {"type": "scaled_float", "scaling_factor": 1000}}, ["blue_green"]),
])
def test_elasticsearch_mapping_changes_in_place_or_by_blue_green(change, kind):
    decl = _decl(**change)
    steps, notes, refusals = es.plan("p", LIVE, decl)
    assert _kinds(steps) == kind and not refusals
    if kind == ["put_mapping"]:
        # what is generated in place is what the adapter's own put_mapping check lets through
        live_props = {"sku": {"type": "keyword", "ignore_above": 64}, **LIVE["mappings"]["properties"]}
        assert mapping_conflicts(live_props, steps[0]["put_mapping"]["body"]["properties"]) == []
    if kind == ["blue_green"]:
        bg = steps[0]["blue_green"]
        assert bg["alias"] == "p" and bg["body"]["mappings"] == decl.mappings and bg["catch_up"] == "freeze"


def test_elasticsearch_settings_dynamic_in_place_static_by_blue_green_undeclared_reset():
    assert es.plan("p", LIVE, _decl({"index": {"refresh_interval": "30s", "number_of_replicas": 0}}))[0] == [
        {"method": "PUT", "path": "/p/_settings", "body": {"index.number_of_replicas": "0",
                                                           "index.refresh_interval": "30s"}}]
    assert es.plan("p", LIVE, _decl({}))[0] == [
        {"method": "PUT", "path": "/p/_settings", "body": {"index.refresh_interval": None}}]
    steps, notes, _ = es.plan("p", LIVE, _decl({"number_of_shards": 3, "refresh_interval": "1s"}))
    assert _kinds(steps) == ["blue_green"] and "setting index.number_of_shards: '1' → '3' (static" in notes[-1]


def test_elasticsearch_an_alias_that_does_not_exist_is_created_behind_a_versioned_index():
    steps, _, _ = es.plan("p", {"missing": True, "next": 3}, _decl())
    assert steps == [{"create_index": {"index": "p_v3", "body": {"settings": {"refresh_interval": "1s"},
                                                                 "mappings": _decl().mappings}}},
                     {"switch_alias": {"alias": "p", "from": None, "to": "p_v3"}}]


def test_elasticsearch_flat_settings_read_every_way_they_are_written():
    assert es.flat_settings({"index": {"refresh_interval": "5s", "blocks": {"write": True}}, "number_of_replicas": 0,
                             "index.codec": "best_compression"}) == {
        "index.refresh_interval": "5s", "index.blocks.write": "true", "index.number_of_replicas": "0",
        "index.codec": "best_compression"}


def test_a_text_index_as_listindexes_shows_it_equals_its_declaration(tmp_path):
    # what MongoDB 7 answers for createIndex({category: 1, title: "text", body: "text"}, {weights: {title: 5}})
    live = mongo.normal_index({"v": 2, "key": {"category": 1, "_fts": "text", "_ftsx": 1}, "name": "search",
                               "weights": {"body": 1, "title": 5}, "default_language": "english",
                               "language_override": "language", "textIndexVersion": 3})
    root = _declare(tmp_path, "mongodb", {"posts.yaml": "indexes:\n  - name: search\n    key: {category: 1, title: text, "
                                                        "body: text}\n    weights: {body: 1, title: 5}\n"})
    assert mongo.same_index(live, mongo.read_declared(root)["posts"]["indexes"]["search"])
    plain = mongo.normal_index({"v": 2, "key": {"_fts": "text", "_ftsx": 1}, "name": "t", "weights": {"title": 1},
                                "default_language": "english", "language_override": "language"})
    assert plain == {"name": "t", "key": {"title": "text"}}


def test_a_pre_7_type_level_in_a_declared_mapping_is_read_through():
    decl = es.AliasDecl(alias="p", settings={"refresh_interval": "1s"},
                        mappings={"_doc": {**BASE, "properties": {**BASE["properties"], "barcode": {"type": "keyword"}}}})
    steps, _, _ = es.plan("p", LIVE, decl)
    assert steps == [{"put_mapping": {"index": "p", "body": {"properties": {"barcode": {"type": "keyword"}}}}}]


def test_a_collation_listed_with_its_defaults_equals_the_few_keys_declared():
    live = mongo.normal_index({"v": 2, "key": {"name": 1}, "name": "n", "collation": {
        "locale": "fr", "caseLevel": False, "caseFirst": "off", "strength": 2, "numericOrdering": False,
        "alternate": "non-ignorable", "maxVariable": "punct", "normalization": False, "backwards": False,
        "version": "57.1"}})
    assert mongo.same_index(live, _ix("n", {"name": 1}, collation={"locale": "fr", "strength": 2}))
    assert not mongo.same_index(live, _ix("n", {"name": 1}, collation={"locale": "fr", "strength": 1}))
    assert not mongo.same_index(live, _ix("n", {"name": 1}))


def test_a_domain_folder_without_declarations_says_where_they_go(tmp_path):
    (tmp_path / "domain.yaml").write_text("technologies: {mongodb: {}}\n")
    with pytest.raises(SpecError) as err:
        mongo.read_declared(tmp_path)
    assert "no declared mongodb state here" in str(err.value) and "<domain>/mongodb/schema/" in str(err.value)
