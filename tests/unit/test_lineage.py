"""What a migration changed, read from the file (polymigrate.lineage): the names lineage reports."""

from pathlib import Path

import pytest

from polymigrate import lineage
from polymigrate.catalog import load_file


def migration(tmp_path: Path, technology: str, name: str, text: str):
    root = tmp_path / technology
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_text(text, encoding="utf-8")
    m, problems, _ = load_file("shop", technology, root, root / name)
    assert m is not None, problems
    return m


def names(changes):
    return [(c.kind, c.name, c.action) for c in changes]


def test_postgresql_statements_name_their_tables(tmp_path):
    m = migration(tmp_path, "postgresql", "V1__x.sql", """
        CREATE TABLE sales.orders (id bigint PRIMARY KEY);
        CREATE INDEX CONCURRENTLY orders_id ON sales.orders (id);
        ALTER TABLE customers RENAME TO clients;
        UPDATE clients SET name = '' WHERE name IS NULL;
        DROP TABLE IF EXISTS legacy_orders;
        CREATE VIEW open_orders AS SELECT * FROM sales.orders;
        SELECT 1;
    """)
    assert names(lineage.changed(m)) == [
        ("table", "sales.orders", "created"), ("table", "sales.orders", "altered"),
        ("table", "customers", "dropped"), ("table", "clients", "renamed"), ("table", "clients", "written"),
        ("table", "legacy_orders", "dropped"), ("view", "open_orders", "created")]


def test_postgresql_views_truncates_renames_and_the_adapters_own_parse(tmp_path):
    """Every statement kind lineage names, from pglast's JSON tree; the adapter's split (the parse that
    runs the file) yields the same datasets, so an applied file is parsed once (issue 24)."""
    from polymigrate.adapters.postgresql.statements import split

    text = """
        ALTER TABLE s.customers RENAME TO clients;
        ALTER TABLE s.c RENAME COLUMN a TO b;
        ALTER VIEW v RENAME TO w;
        ALTER VIEW v ALTER COLUMN a SET DEFAULT 1;
        ALTER INDEX i SET (fillfactor = 50);
        DELETE FROM a.b;
        INSERT INTO x.y SELECT 1;
        TRUNCATE a, b.c;
        DROP TABLE IF EXISTS legacy, a.b, c.d.e;
        DROP VIEW v1; DROP MATERIALIZED VIEW m1; DROP INDEX i1;
        CREATE MATERIALIZED VIEW mv AS SELECT 1;
        CREATE TABLE s.ctas AS SELECT 1;
        CREATE TABLE ${t} (id int);
    """
    m = migration(tmp_path, "postgresql", "V2__all.sql", text)
    expected = [
        ("table", "s.customers", "dropped"), ("table", "s.clients", "renamed"), ("table", "s.c", "altered"),
        ("view", "v", "dropped"), ("view", "w", "renamed"), ("view", "v", "altered"), ("table", "a.b", "written"),
        ("table", "x.y", "written"), ("table", "a", "written"), ("table", "b.c", "written"),
        ("table", "legacy", "dropped"), ("table", "a.b", "dropped"), ("table", "d.e", "dropped"),
        ("view", "v1", "dropped"), ("view", "m1", "dropped"), ("view", "mv", "created"),
        ("table", "s.ctas", "created"), ("table", "orders", "created")]
    assert names(lineage.changed(m, {"t": "orders"})) == expected
    statements = split(m.render({"t": "orders"}), file=m.path)
    assert names(dict.fromkeys(lineage.postgresql_changes((s.node, s.fields) for s in statements))) == expected


def test_mongodb_up_only_not_down(tmp_path):
    m = migration(tmp_path, "mongodb", "2-fill.py", '''
def up(db, ctx):
    ctx.transform("posts", {}, lambda p: {"$set": {"v": 2}})
    db.feed.create_index([("at", 1)], name="at_1")

def down(db, ctx):
    db.archive.drop()
''')
    assert names(lineage.changed(m)) == [("collection", "posts", "written"), ("collection", "feed", "altered")]


def test_redis_key_patterns_get_the_literal_parts(tmp_path):
    m = migration(tmp_path, "redis", "1-move.lua", """-- polymigrate: batch_size=100
local prefix = ARGV[3]
local res = redis.call('SCAN', ARGV[1], 'MATCH', prefix .. 'user:*:profile', 'COUNT', tonumber(ARGV[2]))
for _, key in ipairs(res[2]) do
  local id = string.match(key, 'user:(.+):profile')
  redis.call('RENAMENX', key, prefix .. 'user_profile:' .. id)
end
return {res[1], 0}
""")
    assert names(lineage.changed(m)) == [("keys", "user:*:profile", "written"), ("keys", "user_profile:*", "renamed")]


def test_elasticsearch_steps_name_indices_and_aliases(tmp_path):
    m = migration(tmp_path, "elasticsearch", "1-x.json", """{"steps": [
        {"create_index": {"index": "people_v1", "body": {"aliases": {"people": {}}}}},
        {"put_mapping": {"index": "people_v1", "body": {"properties": {"a": {"type": "keyword"}}}}},
        {"blue_green": {"alias": "people"}}]}""")
    assert names(lineage.changed(m)) == [("index", "people_v1", "created"), ("alias", "people", "created"),
                                         ("index", "people_v1", "altered"), ("alias", "people", "altered")]


@pytest.mark.parametrize("technology, target, expected", [
    ("postgresql", "postgresql://app@db.internal:5432/shop", "postgres://db.internal:5432"),
    ("mongodb", "mongodb://app:***@mongo:27017/shop", "mongodb://mongo:27017"),
    ("redis", "redis://cache:6379/0 polymigrate", "redis://cache:6379"),
])
def test_namespace_never_carries_the_user(technology, target, expected):
    assert lineage.namespace(technology, target) == expected
