"""Governance lint rules over real migration files and a domain's labels (docs/governance.md)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from polymigrate.governance.labels import LabelIndex
from polymigrate.governance.recognisers import by_name, by_values
from polymigrate.lint import lint_file
from polymigrate.spec.governance import Label
from polymigrate.spec.models import Domain

from .helpers import migration

PII = Label(kind="pii", level="medium")
PCI = Label(kind="pci", level="critical")


def _findings(tmp_path, technology, text, labels, rule, name=None, index=None):
    idx = index or LabelIndex.of(labels)
    report = lint_file(migration(tmp_path, technology, text, name), state={"labels": idx})
    return [f for f in report.findings if f.rule == rule], idx


def test_a_personal_column_without_a_label_is_a_finding_that_says_what_to_write(tmp_path):
    found, _ = _findings(tmp_path, "postgresql", "ALTER TABLE users ADD COLUMN phone text;", {},
                         "personal-data-unlabelled")
    assert len(found) == 1 and found[0].severity == "medium" and found[0].line == 1
    assert "users.phone looks like a phone number (pii" in found[0].message
    assert "'postgresql:users.phone': {kind: pii, level: medium}" in found[0].fix


def test_a_labelled_or_harmless_column_is_not(tmp_path):
    labels = {"postgresql:users.phone": PII}
    assert not _findings(tmp_path, "postgresql", "ALTER TABLE users ADD COLUMN phone text;", labels,
                         "personal-data-unlabelled")[0]
    assert not _findings(tmp_path, "postgresql", "ALTER TABLE users ADD COLUMN loyalty_points int;", {},
                         "personal-data-unlabelled")[0]


def test_mongo_and_search_fields_are_checked_too(tmp_path):
    mongo = '{"commands": [{"createIndexes": "posts", "indexes": [{"key": {"author.email": 1}, "name": "e"}]}]}'
    found, _ = _findings(tmp_path, "mongodb", mongo, {}, "personal-data-unlabelled")
    assert [f.message.split(" looks")[0] for f in found] == ["posts.author.email"]
    es = ('{"steps": [{"create_index": {"index": "people_v3", "body": {"mappings": {"properties": '
          '{"full_name": {"type": "text"}}}}}}]}')
    assert not _findings(tmp_path, "elasticsearch", es, {"elasticsearch:people.full_name": PII},
                         "personal-data-unlabelled")[0], "people_v3 is labelled as the people alias"


CACHE = """local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3] .. 'card:*', 'COUNT', 100)
for _, key in ipairs(res[2]) do
  redis.call('HSET', key, 'pan', ARGV[4])
end
return {res[1], 0}
"""


def test_a_card_number_copied_into_a_redis_cache_without_its_label_is_refused_at_high(tmp_path):
    found, _ = _findings(tmp_path, "redis", CACHE, {"postgresql:payments.pan": PCI}, "label-not-carried")
    assert len(found) == 1 and found[0].severity == "high" and found[0].line == 3
    assert "card:*" in found[0].message and "postgresql:payments.pan (pci/critical)" in found[0].message
    labelled = {"postgresql:payments.pan": PCI, "redis:card:*": Label(kind="pci", level="critical")}
    assert not _findings(tmp_path, "redis", CACHE, labelled, "label-not-carried")[0]
    weaker = {"postgresql:payments.pan": PCI, "redis:card:*": Label(kind="pii", level="low")}
    assert _findings(tmp_path, "redis", CACHE, weaker, "label-not-carried")[0], "a weaker label does not carry it"


def test_a_backfill_passes_a_pii_label_on_but_card_data_must_be_declared(tmp_path):
    found, idx = _findings(tmp_path, "postgresql", "UPDATE users SET full_name = first_name || ' ' || last_name;",
                           {"postgresql:users.first_name": PII}, "label-not-carried")
    assert not found and idx.get("postgresql", "users.full_name").derived_from == "postgresql:users.first_name"
    found, _ = _findings(tmp_path, "postgresql", "UPDATE payments SET pan_plain = pan;",
                         {"postgresql:payments.pan": PCI}, "label-not-carried")
    assert len(found) == 1 and "column payments.pan_plain" in found[0].message


def test_dropping_retyping_or_renaming_a_labelled_column_is_a_regulated_change(tmp_path):
    labels = {"postgresql:users.email": Label(kind="pii", level="high")}
    sql = ("ALTER TABLE users DROP COLUMN email;\nALTER TABLE users ALTER COLUMN email TYPE varchar(80);\n"
           "ALTER TABLE users RENAME COLUMN email TO mail;\nALTER TABLE users DROP COLUMN nickname;\n")
    found, idx = _findings(tmp_path, "postgresql", sql, labels, "labelled-data-regulated-change")
    assert [(f.line, f.message.split(" labelled")[0]) for f in found] == [(1, "drops"), (2, "retypes"), (3, "renames")]
    assert [r["action"] for r in idx.regulated] == ["drops", "retypes", "renames"]
    assert idx.regulated[0]["kind"] == "pii" and idx.regulated[0]["object"] == "postgresql:users.email"


def test_a_mongo_transform_unsetting_a_labelled_field_is_regulated(tmp_path):
    text = ('def up(db, ctx):\n    ctx.transform("posts", {}, {"$unset": {"author.first_name": ""}}, name="x")\n\n\n'
            'def down(db, ctx):\n    pass\n')
    found, _ = _findings(tmp_path, "mongodb", text, {"mongodb:posts.author.first_name": PII},
                         "labelled-data-regulated-change", name="1-drop.py")
    assert len(found) == 1 and found[0].line == 2


def test_without_labels_the_rules_are_silent(tmp_path):
    report = lint_file(migration(tmp_path, "postgresql", "ALTER TABLE users ADD COLUMN email text;"))
    assert not [f for f in report.findings if f.rule == "personal-data-unlabelled"]


def test_recognisers_from_names_and_values():
    assert by_name("card_number").kind == "pci" and by_name("phone_e164").kind == "pii"
    assert by_name("sku") is None and by_name("order_reference") is None
    assert by_values(["4111 1111 1111 1111", "5500 0055 5555 5559"]).kind == "pci"
    assert by_values(["ada@example.com", "bob@example.org"]).what == "e-mail addresses"
    assert by_values(["8001015009087"]).what == "South African id numbers"
    assert by_values(["4111 1111 1111 1112", "hello"]) is None  # not Luhn-valid


def test_labels_in_domain_yaml_are_checked():
    Domain(name="d", labels={"postgresql:users.email": {"kind": "pii", "retention": "30d"}})
    with pytest.raises(ValidationError, match="must be '<technology>:<object>'"):
        Domain(name="d", labels={"users.email": {"kind": "pii"}})
    with pytest.raises(ValidationError, match="30d, 12w, 6m or 7y"):
        Domain(name="d", labels={"postgresql:users.email": {"kind": "pii", "retention": "a month"}})
    with pytest.raises(ValidationError):
        Domain(name="d", labels={"postgresql:users.email": {"kind": "personal"}})


def test_a_cache_key_built_from_labelled_data_needs_the_label(tmp_path):
    lua = "redis.call('SET', ARGV[3] .. 'user_by_email:' .. ARGV[4], ARGV[5])\nreturn {'0', 1}\n"
    labels = {"postgresql:users.email": Label(kind="pii", level="high")}
    found, _ = _findings(tmp_path, "redis", lua, labels, "label-not-carried")
    assert len(found) == 1 and found[0].line == 1
    assert "the Redis key pattern user_by_email:, built from email, receives postgresql:users.email" in found[0].message
    labels["redis:user_by_email:*"] = Label(kind="pii", level="high")
    assert not _findings(tmp_path, "redis", lua, labels, "label-not-carried")[0]


def test_a_search_index_copying_a_labelled_field_needs_the_label_there(tmp_path):
    es = ('{"steps": [{"create_index": {"index": "people_v1", "body": {"mappings": {"properties": '
          '{"email": {"type": "keyword"}, "followers": {"type": "integer"}}}}}}]}')
    labels = {"postgresql:users.email": Label(kind="pii", level="high")}
    found, _ = _findings(tmp_path, "elasticsearch", es, labels, "label-not-carried")
    assert [f.message for f in found] == [
        "the search index field people_v1.email receives postgresql:users.email (pii/high) without that label"]
    labels["elasticsearch:people.email"] = Label(kind="pii", level="high")
    assert not _findings(tmp_path, "elasticsearch", es, labels, "label-not-carried")[0]


def test_a_mongo_transform_copying_a_labelled_name_into_documents_needs_the_label(tmp_path):
    text = ('def _to_v2(post):\n    return {"$set": {"author.full_name": post["name"], "schemaVersion": 2}}\n\n\n'
            'def up(db, ctx):\n    ctx.transform("posts", {}, _to_v2, name="v2")\n')
    labels = {"postgresql:users.full_name": PII}
    found, _ = _findings(tmp_path, "mongodb", text, labels, "label-not-carried", name="1-v2.py")
    assert [(f.line, f.message) for f in found] == [
        (2, "the collection field posts.author.full_name receives postgresql:users.full_name (pii/medium) without that "
            "label")]
    labels["mongodb:posts.author.full_name"] = PII
    assert not _findings(tmp_path, "mongodb", text, labels, "label-not-carried", name="1-v2.py")[0]
