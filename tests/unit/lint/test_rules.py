"""Every rule: a file that fires it and a safe variant that does not (table-driven).

The registry test makes sure a new rule cannot be added without a row here.
"""

from __future__ import annotations

import json

import pytest

from polymigrate.lint import RULES, lint_migration

from .helpers import migration

PG, MONGO, REDIS, ES = "postgresql", "mongodb", "redis", "elasticsearch"
TESTED_ELSEWHERE = {"version-collision": "test_collisions.py",
                    "table-not-found-on-target": "tests/integration/test_lint_risk.py (needs a target)",
                    # they read the domain's labels, which these cases do not have
                    "personal-data-unlabelled": "test_governance_rules.py",
                    "label-not-carried": "test_governance_rules.py",
                    "labelled-data-regulated-change": "test_governance_rules.py"}


def _es(*steps) -> str:
    return json.dumps({"description": "t", "steps": list(steps)}, indent=2)


def _mongo(*commands) -> str:
    return json.dumps({"description": "t", "commands": list(commands)}, indent=2)


_V1 = {"create_index": {"index": "products_v1", "body": {"mappings": {"properties": {"price": {"type": "float"}}}}}}
_ALIAS = {"switch_alias": {"alias": "products", "from": None, "to": "products_v1"}}

# rule: (technology, firing text, safe text[, file name])
CASES = {
    "require-concurrent-index-creation": (PG, "CREATE INDEX i ON orders (customer_id);",
                                          "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON orders (customer_id);"),
    "require-concurrent-index-deletion": (PG, "DROP INDEX i;", "DROP INDEX CONCURRENTLY IF EXISTS i;"),
    "ban-concurrent-index-creation-in-transaction": (
        PG, "BEGIN;\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON orders (a);\nCOMMIT;",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS i ON orders (a);"),
    "require-lock-timeout": (PG, "ALTER TABLE orders ADD COLUMN note text;",
                             "-- polymigrate: lock_timeout=2s\nALTER TABLE orders ADD COLUMN note text;"),
    "require-statement-timeout": (PG, "ALTER TABLE orders ALTER COLUMN total TYPE numeric(12,2);",
                                  "-- polymigrate: statement_timeout=5min\n"
                                  "ALTER TABLE orders ALTER COLUMN total TYPE numeric(12,2);"),
    "changing-column-type": (PG, "ALTER TABLE orders ALTER COLUMN total TYPE bigint;",
                             "ALTER TABLE orders ADD COLUMN total_v2 bigint;"),
    "adding-field-with-default": (PG, "ALTER TABLE orders ADD COLUMN token uuid DEFAULT gen_random_uuid();",
                                  "ALTER TABLE orders ADD COLUMN created timestamptz DEFAULT now();"),
    "adding-not-nullable-field": (
        PG, "ALTER TABLE orders ALTER COLUMN total SET NOT NULL;",
        "ALTER TABLE orders ADD CONSTRAINT total_nn CHECK (total IS NOT NULL) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT total_nn;\nALTER TABLE orders ALTER COLUMN total SET NOT NULL;"),
    "adding-required-field": (PG, "ALTER TABLE orders ADD COLUMN region text NOT NULL;",
                              "ALTER TABLE orders ADD COLUMN region text NOT NULL DEFAULT 'eu';"),
    "adding-serial-primary-key-field": (
        PG, "ALTER TABLE orders ADD PRIMARY KEY (id);",
        "ALTER TABLE orders ADD CONSTRAINT orders_pk PRIMARY KEY USING INDEX orders_id_idx;"),
    "constraint-missing-not-valid": (PG, "ALTER TABLE orders ADD CONSTRAINT pos CHECK (total >= 0);",
                                     "ALTER TABLE orders ADD CONSTRAINT pos CHECK (total >= 0) NOT VALID;"),
    "adding-foreign-key-constraint": (
        PG, "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (customer_id) REFERENCES customers (id);",
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (customer_id) REFERENCES customers (id) NOT VALID;"),
    "disallowed-unique-constraint": (PG, "ALTER TABLE orders ADD CONSTRAINT u UNIQUE (number);",
                                     "ALTER TABLE orders ADD CONSTRAINT u UNIQUE USING INDEX orders_number_idx;"),
    "ban-drop-database": (PG, "DROP DATABASE shop;", "CREATE SCHEMA IF NOT EXISTS shop;"),
    "ban-drop-table": (PG, "DROP TABLE orders;", "DROP VIEW orders_summary;"),
    "ban-drop-schema": (PG, "DROP SCHEMA legacy CASCADE;", "CREATE SCHEMA IF NOT EXISTS legacy;"),
    "ban-drop-cascade": (PG, "DROP TYPE mood CASCADE;", "DROP TYPE mood;"),
    "ban-drop-owned": (PG, "DROP OWNED BY legacy_role;", "REASSIGN OWNED BY legacy_role TO app_owner;"),
    "unbounded-delete-or-update": (PG, "UPDATE orders SET note = NULL;", "UPDATE orders SET note = NULL WHERE id < 100;"),
    "ban-drop-column": (PG, "ALTER TABLE orders DROP COLUMN note;", "ALTER TABLE orders ADD COLUMN note text;"),
    "ban-truncate-cascade": (PG, "TRUNCATE orders CASCADE;", "DELETE FROM orders WHERE id < 100;"),
    "truncate-table": (PG, "TRUNCATE orders;", "DELETE FROM orders WHERE id < 100;"),
    "renaming-column": (PG, "ALTER TABLE orders RENAME COLUMN note TO remark;",
                        "ALTER TABLE orders ADD COLUMN remark text;"),
    "renaming-table": (PG, "ALTER TABLE orders RENAME TO purchases;", "CREATE VIEW purchases AS SELECT * FROM orders;"),
    "ban-drop-not-null": (PG, "ALTER TABLE orders ALTER COLUMN note DROP NOT NULL;",
                          "ALTER TABLE orders ALTER COLUMN note SET DEFAULT '';"),
    "prefer-bigint-over-int": (PG, "CREATE TABLE t (n integer);", "CREATE TABLE t (n bigint);"),
    "prefer-bigint-over-smallint": (PG, "CREATE TABLE t (n smallint);", "CREATE TABLE t (n bigint);"),
    "prefer-text-field": (PG, "CREATE TABLE t (s varchar(40));", "CREATE TABLE t (s text CHECK (char_length(s) <= 40));"),
    "prefer-timestamp-tz": (PG, "CREATE TABLE t (at timestamp);", "CREATE TABLE t (at timestamptz);"),
    "ban-char-field": (PG, "CREATE TABLE t (code char(2));", "CREATE TABLE t (code text);"),
    "prefer-identity": (PG, "CREATE TABLE t (id bigserial PRIMARY KEY);",
                        "CREATE TABLE t (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY);"),
    "prefer-robust-stmts": (
        PG, "-- polymigrate: transactional=false\nCREATE TABLE t (id bigint);",
        "-- polymigrate: transactional=false\nCREATE TABLE IF NOT EXISTS t (id bigint);"),
    "explicit-transaction-control": (PG, "CREATE TABLE a (id bigint);\nCOMMIT;\nCREATE TABLE b (id bigint);",
                                     "CREATE TABLE a (id bigint);\nCREATE TABLE b (id bigint);"),
    "commit-inside-do-block": (
        PG, "DO $$\nBEGIN\n  FOR i IN 1..3 LOOP\n    INSERT INTO t VALUES (i);\n    COMMIT;\n  END LOOP;\nEND $$;",
        "DO $$\nBEGIN\n  -- commit later\n  INSERT INTO t VALUES (1);\nEND $$;"),
    "sql-syntax-error": (PG, "ALTER TABLE orders ADD COLUMNN note text;", "ALTER TABLE orders ADD COLUMN note text;"),
    "secret-in-migration": (PG, "CREATE ROLE app LOGIN PASSWORD 's3cr3t-Value';",
                            "CREATE ROLE app LOGIN PASSWORD '${app_password}';"),
    "dynamic-sql-concatenation": (
        PG, "CREATE FUNCTION f(t text) RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  EXECUTE 'DELETE FROM ' || t;\nEND $$;",
        "CREATE FUNCTION f(t text) RETURNS void LANGUAGE plpgsql AS $$\nBEGIN\n  EXECUTE format('DELETE FROM %I', t);\nEND $$;"),
    "grant-to-public": (PG, "GRANT SELECT ON orders TO PUBLIC;", "GRANT SELECT ON orders TO app_ro;"),
    "disable-row-level-security": (PG, "ALTER TABLE orders DISABLE ROW LEVEL SECURITY;",
                                   "ALTER TABLE orders ENABLE ROW LEVEL SECURITY;"),
    "mongodb-index-without-background": (
        MONGO, _mongo({"createIndexes": "posts", "indexes": [{"key": {"a": 1}, "name": "a"}]}),
        _mongo({"createIndexes": "posts", "indexes": [{"key": {"a": 1}, "name": "a", "background": True}]})),
    "mongodb-validator-change": (
        MONGO, _mongo({"collMod": "posts", "validator": {"$jsonSchema": {"required": ["a"]}}, "validationLevel": "strict"}),
        _mongo({"collMod": "posts", "validator": {"$jsonSchema": {"required": ["a"]}}, "validationLevel": "moderate"})),
    "mongodb-unbounded-update": (
        MONGO, _mongo({"update": "posts", "updates": [{"q": {}, "u": {"$set": {"v": 2}}, "multi": True}]}),
        _mongo({"update": "posts", "updates": [{"q": {"_id": 1}, "u": {"$set": {"v": 2}}}]})),
    "mongodb-drop-collection": (MONGO, _mongo({"drop": "old_posts"}), _mongo({"create": "posts"})),
    "mongodb-drop-index": (
        MONGO, _mongo({"dropIndexes": "posts", "index": "schema_version"}),
        _mongo({"createIndexes": "posts", "indexes": [{"key": {"v": 1}, "name": "v", "background": True}]})),
    "mongodb-rename-collection": (MONGO, _mongo({"renameCollection": "posts", "to": "posts_v1"}),
                                  _mongo({"create": "posts_v2"})),
    "mongodb-migration-without-up": (
        MONGO, "// migrate-mongo file that forgot its exports\nasync function up(db) {}\n",
        "module.exports = {\n  async up(db, client) {},\n  async down(db, client) {},\n};\n", "1-change.js"),
    "redis-keys-command": (REDIS, "local keys = redis.call('KEYS', 'user:*')\nreturn #keys",
                           "local res = redis.call('SCAN', ARGV[1], 'MATCH', 'user:*', 'COUNT', ARGV[2])\n"
                           "return {res[1], #res[2]}"),
    "redis-whole-keyspace-loop": (
        REDIS, "local cursor = ARGV[1]\nrepeat\n  local res = redis.call('SCAN', cursor, 'MATCH', 'u:*')\n"
               "  cursor = res[1]\nuntil cursor == '0'\nreturn {'0', 0}",
        "local res = redis.call('SCAN', ARGV[1], 'MATCH', 'u:*', 'COUNT', ARGV[2])\nreturn {res[1], #res[2]}"),
    "redis-missing-cursor-protocol": (
        REDIS, "local res = redis.call('SCAN', '0', 'MATCH', 'u:*', 'COUNT', 100)\nreturn {res[1], #res[2]}",
        "local cursor = ARGV[1] or '0'\nlocal res = redis.call('SCAN', cursor, 'MATCH', 'u:*')\nreturn {res[1], #res[2]}"),
    "redis-cross-slot-keys": (
        REDIS, "redis.call('RENAME', 'user:' .. ARGV[1] .. ':profile', 'profile:' .. ARGV[1])\nreturn {'0', 1}",
        "redis.call('RENAME', 'user:{' .. ARGV[1] .. '}:profile', 'profile:{' .. ARGV[1] .. '}')\nreturn {'0', 1}"),
    "es-field-type-change-without-reindex": (
        ES, _es(_V1, _ALIAS, {"put_mapping": {"index": "products", "body": {"properties": {"price": {"type": "keyword"}}}}}),
        _es(_V1, _ALIAS, {"blue_green": {"alias": "products", "catch_up": "freeze", "body": {
            "mappings": {"properties": {"price": {"type": "scaled_float", "scaling_factor": 100}}}}}},
            {"put_mapping": {"index": "products", "body": {"properties": {"price": {"type": "scaled_float"}}}}})),
    "es-write-to-concrete-index": (
        ES, _es(_V1, _ALIAS, {"method": "POST", "path": "/products_v1/_doc", "body": {"price": 1}}),
        _es(_V1, _ALIAS, {"request": {"method": "POST", "path": "/products/_doc", "body": {"price": 1}}})),
    "es-delete-index-behind-alias": (
        ES, _es(_V1, _ALIAS, {"delete_index": {"index": "products_v1"}}),
        _es(_V1, _ALIAS, {"create_index": {"index": "products_v2"}},
            {"switch_alias": {"alias": "products", "from": "products_v1", "to": "products_v2"}},
            {"delete_index": {"index": "products_v1"}})),
    "es-delete-index": (ES, _es({"delete_index": {"index": "old_logs"}}),
                        _es({"create_index": {"index": "old_logs_v2"}})),
    "es-blue-green-catch-up-unset": (
        ES, _es(_V1, _ALIAS, {"blue_green": {"alias": "products"}}),
        _es({"create_index": {"index": "events_v1", "body": {"mappings": {"properties": {"@timestamp": {"type": "date"}}}}}},
            {"switch_alias": {"alias": "events", "from": None, "to": "events_v1"}},
            {"blue_green": {"alias": "events"}})),
    "es-blue-green-catch-up-none": (
        ES, _es(_V1, _ALIAS, {"blue_green": {"alias": "products", "catch_up": "none"}}),
        _es(_V1, _ALIAS, {"blue_green": {"alias": "products", "catch_up": {"field": "updated_at"}}})),
    "es-blue-green-write-freeze": (
        ES, _es(_V1, _ALIAS, {"blue_green": {"alias": "products", "catch_up": "freeze"}}),
        _es(_V1, _ALIAS, {"blue_green": {"alias": "products", "catch_up": {"field": "updated_at"}}})),
    "suppression-missing-reason": (
        PG, "-- polymigrate:lint-ignore ban-drop-table\nDROP TABLE orders;",
        "-- polymigrate:lint-ignore ban-drop-table reason: replaced by purchases in V7, data archived\nDROP TABLE orders;"),
    "unknown-rule-in-suppression": (
        PG, "-- polymigrate:lint-ignore ban-drop-tables reason: archived\nDROP TABLE orders;",
        "-- polymigrate:lint-ignore ban-drop-table reason: archived\nDROP TABLE orders;"),
    "unused-suppression": (
        PG, "-- polymigrate:lint-ignore ban-drop-table reason: archived\nCREATE TABLE t (id bigint);",
        "-- polymigrate:lint-ignore ban-drop-table reason: archived\nDROP TABLE orders;"),
}


def _fired(tmp_path, technology: str, text: str, name: str | None = None) -> set[str]:
    findings = lint_migration(migration(tmp_path, technology, text, name))
    return {f.rule for f in findings if not f.suppressed}


def test_every_registered_rule_has_a_case():
    names = {r.name for r in RULES}
    assert len(names) == len(RULES), "duplicate rule names in the registry"
    missing = names - set(CASES) - set(TESTED_ELSEWHERE)
    assert not missing, f"rules without a firing/safe test case: {sorted(missing)}"
    assert not set(CASES) - names, f"cases for rules that do not exist: {sorted(set(CASES) - names)}"


def test_every_rule_is_complete():
    from polymigrate.spec.models import SEVERITY_ORDER
    for r in RULES:
        assert r.severity in SEVERITY_ORDER, r.name
        assert r.summary and r.fix, f"{r.name} needs a summary and a concrete fix"
        assert r.technology in ("any", PG, MONGO, REDIS, ES), r.name


@pytest.mark.parametrize("rule", sorted(CASES))
def test_rule_fires(tmp_path, rule):
    technology, bad, _safe, *name = CASES[rule]
    assert rule in _fired(tmp_path / "bad", technology, bad, *name)


@pytest.mark.parametrize("rule", sorted(CASES))
def test_safe_variant_does_not_fire(tmp_path, rule):
    technology, _bad, safe, *name = CASES[rule]
    assert rule not in _fired(tmp_path / "safe", technology, safe, *name)
