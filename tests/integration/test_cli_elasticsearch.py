"""The CLI ad hoc on a search target: migrate, status, undo with --url http(s)://…"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from polymigrate.cli import app

from tests.integration.adapters.es_helpers import PRODUCTS_V2, seed, step_file

pytestmark = pytest.mark.integration


def test_adhoc_migrate_status_and_undo_on_a_search_url(search_target, tmp_path):
    t = search_target
    alias = t.name("products")
    seed(t, alias, 50)
    folder = tmp_path / "es"
    folder.mkdir()
    (folder / "1-products-v2.json").write_text(step_file({"blue_green": {
        "alias": alias, "body": {"mappings": PRODUCTS_V2}, "catch_up": "none"}}))
    common = ["--url", t.url, "--locations", str(folder), "--table", t.ledger, "-d", "shop"]
    runner = CliRunner()

    out = runner.invoke(app, ["migrate", *common])
    assert out.exit_code == 0, out.output
    assert "1 applied, now at 1" in " ".join(out.output.split())
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v2"]

    status = runner.invoke(app, ["status", *common])
    assert status.exit_code == 0 and "success" in status.output

    back = runner.invoke(app, ["undo", "--to", "0", *common])
    assert back.exit_code == 0, back.output
    assert "1 undone" in " ".join(back.output.split())
    assert list(t.api.alias_targets(alias)) == [f"{alias}_v1"] and t.api.count(alias) == 50


def test_adhoc_url_that_does_not_answer_exits_1_as_transient(tmp_path):
    folder = tmp_path / "es"
    folder.mkdir()
    (folder / "1-x.json").write_text(step_file({"create_index": {"index": "x"}}))
    out = CliRunner().invoke(app, ["migrate", "--url", "http://127.0.0.1:9", "--locations", str(folder)])
    assert out.exit_code == 1, out.output
    assert "transient, safe to retry" in out.stderr and "127.0.0.1:9" in out.stderr
