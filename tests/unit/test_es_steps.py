"""The pure parts of the Elasticsearch adapter: template forms, mapping conflicts, names, catch-up units."""

from __future__ import annotations

import pytest

from polymigrate.adapters.elasticsearch.api import check_index_name, flavour_of
from polymigrate.adapters.elasticsearch.bluegreen import field_type, next_number, overlap_of
from polymigrate.adapters.elasticsearch.steps import (component_body, composable_template, mapping_conflicts,
                                                      unwrap_mapping)
from polymigrate.errors import PermanentError
from polymigrate.spec import formats

MAPPING = {"properties": {"sku": {"type": "keyword"}}}


def tmpl(**kw) -> formats.IndexTemplate:
    return formats.IndexTemplate(name="products", **kw)


def test_a_composable_template_is_sent_as_it_is_with_the_steps_overrides():
    body = {"index_patterns": ["p_v*"], "priority": 1, "template": {"mappings": MAPPING}}
    assert composable_template(tmpl(body=body)) == body
    assert composable_template(tmpl(body=body, priority=9, composed_of=["base"]))["priority"] == 9


def test_a_legacy_template_becomes_composable_with_order_as_priority_and_no_type_level():
    legacy = {"index_patterns": "p_v*", "order": 3, "version": 2, "settings": {"number_of_shards": 1},
              "mappings": {"_doc": MAPPING}, "aliases": {"p": {}}}
    assert composable_template(tmpl(body=legacy)) == {
        "index_patterns": ["p_v*"], "priority": 3, "version": 2,
        "template": {"settings": {"number_of_shards": 1}, "mappings": MAPPING, "aliases": {"p": {}}}}
    assert composable_template(tmpl(body={"template": "p_*", "mappings": MAPPING}))["index_patterns"] == ["p_*"]


def test_an_index_body_needs_patterns_from_the_step():
    assert composable_template(tmpl(body={"mappings": MAPPING}, index_patterns=["p_v*"])) == {
        "index_patterns": ["p_v*"], "template": {"mappings": MAPPING}}
    with pytest.raises(PermanentError) as info:
        composable_template(tmpl(body={"mappings": MAPPING}))
    assert "index_patterns" in str(info.value) and "products_v*" in info.value.hint


def test_component_bodies_and_mapping_types():
    assert component_body({"settings": {"a": 1}}) == {"template": {"settings": {"a": 1}}}
    assert component_body({"template": {"settings": {"a": 1}}}) == {"template": {"settings": {"a": 1}}}
    assert unwrap_mapping({"properties": {"x": {}}}) == {"properties": {"x": {}}}  # not a type name
    assert unwrap_mapping({"dynamic": "strict"}) == {"dynamic": "strict"}


@pytest.mark.parametrize("new, conflicts", [
    ({"sku": {"type": "keyword"}, "name": {"type": "text"}}, []),                       # additive
    ({"price": {"type": "scaled_float", "scaling_factor": 100}}, ["price: type float → scaled_float"]),
    ({"name": {"type": "text", "analyzer": "french"}}, ["name: analyzer None → 'french'"]),
    ({"name": {"type": "text", "index": True}}, []),                                    # the default, unchanged
    ({"name": {"type": "text", "doc_values": False}}, []),                              # text has none anyway
    ({"sku": {"type": "keyword", "doc_values": False}}, ["sku: doc_values True → False"]),
    ({"name": {"type": "text", "fields": {"raw": {"type": "keyword"}}}}, []),           # a new multi-field
    ({"name": {"type": "text", "fields": {"auto": {"type": "keyword"}}}}, ["name.auto: type text → keyword"]),
    ({"owner": {"properties": {"id": {"type": "keyword"}}}}, ["owner.id: type long → keyword"]),
])
def test_mapping_conflicts_name_what_an_existing_field_cannot_take(new, conflicts):
    live = {"sku": {"type": "keyword"}, "price": {"type": "float"},
            "name": {"type": "text", "fields": {"auto": {"type": "text"}}},
            "owner": {"properties": {"id": {"type": "long"}}}}
    assert mapping_conflicts(live, new) == conflicts


def test_index_names_follow_the_servers_rules():
    assert check_index_name("products_v2") == "products_v2"
    for bad in ("Products", "a/b", "a b", "_x", "-x", "a,b", "a*", ".."):
        with pytest.raises(PermanentError):
            check_index_name(bad)


def test_versioned_names_and_catch_up_units():
    assert next_number("products", ["products_v1", "products_v10", "products_v2x", "other_v99", "products"]) == 11
    assert next_number("products", []) == 1
    assert field_type({"properties": {"meta": {"properties": {"at": {"type": "date"}}}}}, "meta.at") == "date"
    assert field_type(MAPPING, "missing") is None
    assert overlap_of("2m", "date") == 120_000 and overlap_of(None, "date") == 60_000
    assert overlap_of(None, "number") == 0 and overlap_of(5, "number") == 5
    with pytest.raises(PermanentError):
        overlap_of("2 minutes", "date")
    with pytest.raises(PermanentError):
        overlap_of("2m", "number")


def test_the_flavour_is_read_from_the_root_document():
    assert flavour_of({"version": {"distribution": "opensearch", "number": "2.19.1"}}).label == "OpenSearch 2.19.1"
    es = flavour_of({"version": {"number": "9.2.0", "build_flavor": "default"}, "tagline": "You Know, for Search"})
    assert (es.flavour, es.major) == ("elasticsearch", 9)


def test_an_unknown_step_or_a_missing_field_names_its_line(tmp_path):
    """Issue 28 item 4: the problem names the file's line, not only the path of keys."""
    from polymigrate.catalog import discover

    unknown = '{\n  "steps": [\n    {"create_index": {"index": "a"}},\n    {"frobnicate": {"x": 1}}\n  ]\n}\n'
    with pytest.raises(formats.FormatError) as info:
        formats.parse("elasticsearch", unknown)
    assert "frobnicate" in str(info.value) and info.value.line == 4
    missing = '{\n  "steps": [\n    {"create_index": {"index": "a"}},\n    {"put_mapping": {\n      "indx": "a"}}\n  ]\n}\n'
    with pytest.raises(formats.FormatError) as info:
        formats.parse("elasticsearch", missing)
    assert info.value.line == 4
    folder = tmp_path / "elasticsearch"
    folder.mkdir()
    (folder / "1-steps.json").write_text(unknown)
    [problem] = discover("shop", "elasticsearch", folder).problems
    assert problem.line == 4
