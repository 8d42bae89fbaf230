"""MongoDB lint reads what ``up`` runs: never ``down``, in .json, .py and migrate-mongo .js files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polymigrate.catalog import discover
from polymigrate.lint import lint_migration

from .helpers import migration

PROJECT = Path(__file__).resolve().parents[2] / "integration" / "adapters" / "migrate_mongo_project" / "migrations"


def findings(tmp_path, text: str, name: str):
    return [(f.rule, f.line) for f in lint_migration(migration(tmp_path, "mongodb", text, name)) if not f.suppressed]


JS_DOWN_ONLY = """module.exports = {
  async up(db) {
    await db.collection('posts').updateMany({ v: 1 }, { $set: { v: 2 } });
  },
  async down(db) {
    await db.collection('posts').updateMany({}, { $set: { v: 1 } });
    await db.collection('posts').dropIndex('by_v');
    await db.collection('posts_v2').drop();
  },
};
"""


def test_js_down_is_not_linted(tmp_path):
    assert findings(tmp_path, JS_DOWN_ONLY, "1-change.js") == []


def test_js_up_is_linted_at_its_lines(tmp_path):
    text = JS_DOWN_ONLY.replace("updateMany({ v: 1 }", "updateMany({}", 1).replace(
        "  async down(db) {", "  async down(db) {", 1)
    text = text.replace("    await db.collection('posts').updateMany({}, { $set: { v: 2 } });\n",
                        "    await db.collection('posts').updateMany({}, { $set: { v: 2 } });\n"
                        "    await db.collection('posts').dropIndex('old');\n", 1)
    assert findings(tmp_path, text, "1-change.js") == [("mongodb-unbounded-update", 3), ("mongodb-drop-index", 4)]


@pytest.mark.parametrize("shape", [
    "exports.up = async (db) => {\n  await db.collection('a').drop();\n};\nexports.down = async () => {};\n",
    "export async function up(db) {\n  await db.collection('a').drop();\n}\nexport async function down() {}\n",
    "async function up(db) {\n  await db.collection('a').drop();\n}\nmodule.exports = { up };\n",
    "module.exports = {\n  up: async (db, client) => {\n    await db.collection('a').drop();\n  },\n};\n",
], ids=["exports.up", "esm", "function-then-exports", "arrow-property"])
def test_every_way_migrate_mongo_files_export_up(tmp_path, shape):
    assert "mongodb-drop-collection" in {rule for rule, _ in findings(tmp_path, shape, "1-change.js")}
    assert ("mongodb-migration-without-up", 1) not in findings(tmp_path / "x", shape, "1-change.js")


def test_js_braces_in_strings_templates_and_comments_do_not_end_up_early(tmp_path):
    text = """module.exports = {
  async up(db) {
    const label = `tier } ${'{'} ${ {a: 1}.a }`; // } not the end
    /* } neither */ const s = '}';
    await db.collection('orders').deleteMany({});
  },
  async down(db) { await db.collection('orders').drop(); },
};
"""
    assert findings(tmp_path, text, "1-change.js") == [("mongodb-unbounded-update", 5)]


def test_js_helpers_called_by_up_are_linted_and_those_of_down_are_not(tmp_path):
    text = """const reset = (db) => db.collection('carts').deleteMany({});

async function retire(db) {
  await db.collection('carts_v1').drop();
}

module.exports = {
  async up(db) { await reset(db); },
  async down(db) { await retire(db); },
};
"""
    assert findings(tmp_path, text, "1-change.js") == [("mongodb-unbounded-update", 1)]


def test_py_up_and_its_helpers_only(tmp_path):
    text = '''def _wipe(db):
    db["sessions"].delete_many({})


def _rebuild(db):
    db.sessions.drop()


def up(db, ctx):
    _wipe(db)
    # db.orders.update_many({}, {"$set": {"x": 1}})  commented out: not run


def down(db, ctx):
    _rebuild(db)
'''
    assert findings(tmp_path, text, "1-change.py") == [("mongodb-unbounded-update", 2)]


def test_py_without_up_and_a_transform_is_not_unbounded(tmp_path):
    assert findings(tmp_path, "def upgrade(db):\n    pass\n", "1-change.py") == [("mongodb-migration-without-up", 1)]
    ok = 'def up(db, ctx):\n    ctx.transform("posts", {}, {"$set": {"v": 2}})\n'
    assert findings(tmp_path / "ok", ok, "1-change.py") == []


def test_json_down_commands_are_not_linted(tmp_path):
    text = json.dumps({"commands": [{"create": "posts"}], "down": [{"drop": "posts"}]}, indent=2)
    assert findings(tmp_path, text, "1-change.json") == []
    text = json.dumps({"commands": [{"drop": "posts"}], "down": [{"create": "posts"}]}, indent=2)
    assert findings(tmp_path / "b", text, "1-change.json") == [("mongodb-drop-collection", 4)]


def test_the_migrate_mongo_project_lints_what_each_up_does(tmp_path):
    cat = discover("shop", "mongodb", PROJECT)
    out = {}
    for m in cat.applicable("mongodb"):
        out[m.path.name] = sorted((f.rule, f.line) for f in lint_migration(m))
    assert out == {
        "20240105093000-customers-email-index.js": [("mongodb-index-without-background", 4),
                                                    ("mongodb-index-without-background", 5)],
        "20240212101500-rename-address-fields.js": [("mongodb-rename-collection", 8)],
        "20240301120000-loyalty-tier-backfill.js": [("mongodb-unbounded-update", 17)],  # the bulkWrite's filter: {}
        "20240415083000-orders-status-index-and-cleanup.js": [("mongodb-index-without-background", 5),
                                                              ("mongodb-unbounded-update", 8)],
    }
