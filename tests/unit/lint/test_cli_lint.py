"""``polymigrate lint``: exit code by threshold, JSON output."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from polymigrate.cli import app

from tests.conftest import SPECS

runner = CliRunner()


def _specs(tmp_path, sql: str):
    shutil.copytree(SPECS / "environments", tmp_path / "environments")
    d = tmp_path / "shop"
    (d / "postgresql").mkdir(parents=True)
    (d / "domain.yaml").write_text("description: test shop\ntechnologies:\n  postgresql: {}\n")
    (d / "postgresql" / "V1__change.sql").write_text(sql)
    return tmp_path


def test_exit_code_follows_the_threshold(tmp_path):
    specs = _specs(tmp_path, "ALTER TABLE orders ADD CONSTRAINT pos CHECK (total >= 0);\n")
    assert runner.invoke(app, ["lint", str(specs)]).exit_code == 0            # medium < high
    result = runner.invoke(app, ["lint", str(specs), "--threshold", "medium"])
    assert result.exit_code == 1, result.output
    assert "constraint-missing-not-valid" in result.output and "V1__change.sql:1" in result.output


def test_json_report(tmp_path):
    specs = _specs(tmp_path, "DROP TABLE orders;\n")
    result = runner.invoke(app, ["lint", str(specs), "--json", "-d", "shop"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    shop = data["domains"]["shop"]
    assert data["blocking"] == 1 and shop["destructive"] and shop["max_severity"] == "high"
    assert shop["findings"][0]["rule"] == "ban-drop-table"


def test_bad_threshold_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["lint", str(_specs(tmp_path, "SELECT 1;\n")), "--threshold", "severe"])
    assert result.exit_code == 2 and "info, low, medium, high, critical" in result.output
