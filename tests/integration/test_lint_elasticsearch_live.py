"""Elasticsearch lint rules read the live target when connected (document counts, sizes, mappings)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from polymigrate.catalog import discover
from polymigrate.cli import app
from polymigrate.lint import lint_catalog
from polymigrate.lint.rules import elasticsearch as es_rules

from tests.conftest import SPECS
from tests.integration.adapters.es_helpers import seed, step_file

pytestmark = pytest.mark.integration


def _findings(t, tmp_path, files: dict[str, str], search):
    folder = tmp_path / "es"
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    report = lint_catalog(discover("shop", "elasticsearch", folder), search=search)
    return report, {f.rule: f for f in report.findings}


def test_connected_lint_sees_the_live_mapping_and_sizes_what_a_freeze_or_a_delete_costs(search_target, tmp_path,
                                                                                         monkeypatch):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 2000)
    seed(t, t.name("empty"), 0)
    files = {"1-change.json": step_file(
        {"put_mapping": {"index": alias, "body": {"properties": {"price": {"type": "keyword"}}}}},
        {"blue_green": {"alias": alias, "catch_up": "freeze"}},
        {"delete_index": {"index": t.name("empty_v1")}})}
    monkeypatch.setattr(es_rules, "REINDEX_DOCS_PER_SECOND", 20)  # 2,000 documents: a 100 s copy

    offline, by_rule = _findings(t, tmp_path, files, None)
    assert not offline.connected and "es-field-type-change-without-reindex" not in by_rule  # the catalog alone
    assert by_rule["es-blue-green-write-freeze"].severity == "medium"

    report, by_rule = _findings(t, tmp_path, files, t.api)
    assert report.connected
    change = by_rule["es-field-type-change-without-reindex"]
    assert f"{alias}_v1.price: type float → keyword (on the target)" in change.message
    freeze = by_rule["es-blue-green-write-freeze"]
    assert "2,000 documents" in freeze.message and freeze.severity == "high"  # 100 s of refused writes
    delete = by_rule["es-delete-index"]
    assert "0 documents" in delete.message and delete.severity == "info"


def test_cli_lint_connects_to_a_search_target(opensearch_target):
    out = CliRunner().invoke(app, ["lint", str(SPECS), "-d", "warehousing", "--url", opensearch_target.url, "--json"])
    assert out.exit_code in (0, 1), out.output  # 2 would be a connection or usage error
    report = json.loads(out.stdout)["domains"]["warehousing"]
    assert report["connected"] is True and report["files"] >= 4
