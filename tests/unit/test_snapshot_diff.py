"""The drift diff, allowlist and since-when (pure), and the drift DAGs' blueprints."""

from __future__ import annotations

import shutil
from pathlib import Path

from polymigrate.snapshot_diff import Difference, allowed, carry_since, diff

SPECS = Path(__file__).resolve().parents[2] / "migration_specs"

PG = {"schema": "shop", "tables": {"orders": {"kind": "table", "columns": {
    "id": {"type": "bigint", "not_null": True, "default": None}}}},
    "indexes": {"orders_pkey": {"table": "orders", "definition": "CREATE UNIQUE INDEX orders_pkey …", "valid": True}},
    "constraints": {}, "functions": {}}


def changed(snapshot: dict, path: list[str], value) -> dict:
    import copy

    out = copy.deepcopy(snapshot)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def test_postgres_column_added_type_changed_and_index_removed_are_one_difference_each():
    after = changed(PG, ["tables", "orders", "columns", "note"], {"type": "text", "not_null": False, "default": None})
    after = changed(after, ["tables", "orders", "columns", "id", "type"], "integer")
    after = changed(after, ["indexes", "orders_pkey"], None)
    got = [(d.object, d.change, d.before, d.after) for d in diff("postgresql", "r1", PG, after)]
    assert got == [("indexes.orders_pkey", "removed", PG["indexes"]["orders_pkey"], None),
                   ("tables.orders.columns.id.type", "changed", "bigint", "integer"),
                   ("tables.orders.columns.note", "added", None, {"type": "text", "not_null": False, "default": None})]
    assert diff("postgresql", "r1", PG, PG) == []


def test_mongodb_indexes_compare_by_name_and_the_server_label_is_ignored():
    before = {"database": "d", "server": "FerretDB 1.24", "collections": [
        {"name": "posts", "type": "collection", "options": {}, "indexes": [{"name": "_id_", "key": {"_id": 1}}]}]}
    after = {"database": "d", "server": "MongoDB 7.0", "collections": [
        {"name": "posts", "type": "collection", "options": {"validator": {"$jsonSchema": {"required": ["a"]}}},
         "indexes": [{"name": "by_author", "key": {"author": 1}}, {"name": "_id_", "key": {"_id": 1}}]}]}
    got = [(d.object, d.change) for d in diff("mongodb", "r1", before, after)]
    assert got == [("collections.posts.indexes.by_author", "added"), ("collections.posts.options.validator", "added")]


def test_redis_counts_move_without_drift_but_a_new_shape_or_lost_ttl_is_drift():
    def snap(*shapes):
        return {"key_prefix": "s:", "sampled_keys": 9, "truncated": False,
                "shapes": [{"shape": s, "type": t, "count": c, "with_ttl": w} for s, t, c, w in shapes]}

    base = snap(("s:session:*", "string", 10, 10))
    assert diff("redis", "r1", base, snap(("s:session:*", "string", 5000, 5000))) == []
    got = [(d.object, d.change, d.after) for d in
           diff("redis", "r1", base, snap(("s:session:*", "string", 10, 0), ("s:tmp:*", "hash", 1, 0)))]
    assert got == [("shapes.s:session:* (string).ttl", "changed", "no key expires"),
                   ("shapes.s:tmp:* (hash)", "added", {"ttl": "no key expires"})]


def test_allowlist_matches_by_technology_and_covers_what_is_inside_an_object():
    d = Difference("postgresql", "r1", "tables.scratch_1.columns.x", "added")
    assert allowed(d, ["postgresql:tables.scratch_*"])
    assert allowed(d, ["tables.scratch_1"])  # no technology: any
    assert not allowed(d, ["mongodb:tables.scratch_*"])
    assert not allowed(d, ["postgresql:tables.scratch"])  # a pattern, not a prefix of a name
    assert not allowed(Difference("postgresql", "r1", "indexes.orders_note", "added"), ["postgresql:tables.*"])


def test_since_is_kept_from_the_first_report_of_the_same_difference():
    old = Difference("postgresql", "r1", "indexes.manual", "added", since="2026-11-28T03:00:00+00:00")
    new = [Difference("postgresql", "r1", "indexes.manual", "added"),
           Difference("postgresql", "r1", "indexes.manual", "removed"),
           Difference("postgresql", "r2", "indexes.manual", "added")]
    got = carry_since(new, [old.to_dict()], "2026-11-30T03:00:00+00:00")
    assert [d.since[:10] for d in got] == ["2026-11-28", "2026-11-30", "2026-11-30"]


def test_large_values_are_shortened_in_the_event():
    d = Difference("postgresql", "r1", "tables.big", "added", after={"columns": {f"c{i}": "text" for i in range(200)}})
    assert len(d.to_dict()["after"]) == 500 and d.to_dict()["after"].endswith("…")


def test_one_drift_dag_per_environment_with_a_task_per_domain_and_none_where_disabled(tmp_path):
    from polymigrate.blueprint import compile_drift

    specs = tmp_path / "specs"
    shutil.copytree(SPECS, specs)
    dev = specs / "environments" / "development.yaml"
    dev.write_text(dev.read_text().replace("policy:\n", "policy:\n  drift_schedule: null\n", 1)
                   if "policy:\n" in dev.read_text() else dev.read_text() + "policy:\n  drift_schedule: null\n")
    (specs / "warehousing" / "domain.yaml").write_text("technologies: [oops\n")
    bps = {b.dag_id: b for b in compile_drift(specs)}
    assert sorted(bps) == ["drift__production", "drift__staging", "drift__testing"]
    prod = bps["drift__production"]
    assert prod.schedule == "0 3 * * *" and prod.params == {} and not prod.groups
    assert "warehousing" in [t.task_id for t in prod.tasks]  # broken: its task fails naming the problem
    assert all(t.operator.endswith("DriftOperator") and t.upstream == () for t in prod.tasks)
    assert "warehousing" in prod.doc_md and "Broken specs" in prod.doc_md
