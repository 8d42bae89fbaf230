"""Suppressions, line numbers, placeholders and the report contract the approval policy reads."""

from __future__ import annotations

import json

from polymigrate.catalog import discover
from polymigrate.lint import LintReport, lint_catalog, lint_migration

from .helpers import migration


def _by_rule(findings):
    return {f.rule: f for f in findings}


def test_finding_line_is_the_statements_first_line(tmp_path):
    text = "-- header\nCREATE TABLE t (id bigint);\n\n/* note */\nDROP TABLE\n  orders;\n"
    f = _by_rule(lint_migration(migration(tmp_path, "postgresql", text)))["ban-drop-table"]
    assert f.line == 5
    assert f.statement == "DROP TABLE orders"
    assert f.destructive and f.fix


def test_statement_suppression_covers_only_the_next_statement(tmp_path):
    text = ("CREATE TABLE t (id bigint);\n"
            "-- polymigrate:lint-ignore ban-drop-table reason: orders moved to purchases in V7, archived\n"
            "DROP TABLE orders;\n"
            "DROP TABLE carts;\n")
    drops = [f for f in lint_migration(migration(tmp_path, "postgresql", text)) if f.rule == "ban-drop-table"]
    assert [(f.line, f.suppressed) for f in drops] == [(3, True), (4, False)]
    assert drops[0].suppression_reason == "orders moved to purchases in V7, archived"


def test_header_suppression_covers_the_whole_file_and_accepts_aliases(tmp_path):
    text = ("-- polymigrate:lint-ignore ban-drop-table, prefer-timestamptz reason: scratch tables\n"
            "DROP TABLE a;\nCREATE TABLE b (at timestamp);\nDROP TABLE c;\n")
    findings = lint_migration(migration(tmp_path, "postgresql", text))
    hits = [f for f in findings if f.rule in ("ban-drop-table", "prefer-timestamp-tz")]
    assert len(hits) == 3 and all(f.suppressed for f in hits)
    assert not [f for f in findings if f.rule == "unused-suppression"]


def test_suppression_without_reason_suppresses_nothing(tmp_path):
    text = "-- polymigrate:lint-ignore ban-drop-table\nDROP TABLE orders;\n"
    rules = {f.rule: f for f in lint_migration(migration(tmp_path, "postgresql", text))}
    assert not rules["ban-drop-table"].suppressed
    assert rules["suppression-missing-reason"].line == 1


def test_json_migration_suppresses_through_lint_ignore(tmp_path):
    text = json.dumps({"description": "drop old logs", "lint_ignore": [
        {"rules": ["es-delete-index"], "reason": "logs older than 2 years, legal approved deletion"}],
        "steps": [{"delete_index": {"index": "logs_2019"}}]})
    [f] = [f for f in lint_migration(migration(tmp_path, "elasticsearch", text)) if f.rule == "es-delete-index"]
    assert f.suppressed and "legal" in f.suppression_reason


def test_placeholders_do_not_break_parsing(tmp_path):
    text = "GRANT SELECT ON orders TO ${app_role};\nDROP TABLE ${old_table};\n"
    findings = lint_migration(migration(tmp_path, "postgresql", text))
    assert "sql-syntax-error" not in {f.rule for f in findings}
    assert "ban-drop-table" in {f.rule for f in findings}


def test_secrets_are_never_copied_into_findings(tmp_path):
    text = "-- connect with postgresql://app:Hunter2Secret@db.internal/shop\nSELECT 1;\n"
    [f] = [f for f in lint_migration(migration(tmp_path, "postgresql", text)) if f.rule == "secret-in-migration"]
    assert f.line == 1 and f.severity == "critical"
    assert "Hunter2Secret" not in json.dumps(f.to_dict())


def test_report_blocking_risk_and_json(tmp_path):
    folder = tmp_path / "postgresql"
    folder.mkdir()
    (folder / "V1__create.sql").write_text("CREATE TABLE orders (id bigint, total bigint);\n")
    (folder / "V2__retype.sql").write_text("ALTER TABLE orders ALTER COLUMN total TYPE numeric;\n")
    (folder / "V3__drop.sql").write_text(
        "-- polymigrate:lint-ignore ban-drop-column reason: total moved to order_totals in V2\n"
        "ALTER TABLE orders DROP COLUMN total;\n")
    report = lint_catalog(discover("shop", "postgresql", folder))
    assert isinstance(report, LintReport) and report.files == 3
    assert report.max_severity == "high" and report.risk == "high"
    assert report.destructive  # a suppressed drop is still a destructive change for policy
    assert [f.rule for f in report.blocking("high")] == ["changing-column-type"]
    assert {f.rule for f in report.blocking("info")} >= {"changing-column-type", "require-lock-timeout"}
    assert report.suppressions == [{"rule": "ban-drop-column", "file": str(folder / "V3__drop.sql"), "line": 2,
                                    "reason": "total moved to order_totals in V2",
                                    "statement": "ALTER TABLE orders DROP COLUMN total"}]
    data = json.loads(json.dumps(report.to_dict()))
    assert data["risk"] == "high" and data["counts"]["high"] == 1
    assert any(i["work"] == "rewrite" and i["lock"] == "ACCESS EXCLUSIVE" for i in data["impacts"])


def test_clean_catalog_is_low_risk(tmp_path):
    folder = tmp_path / "postgresql"
    folder.mkdir()
    (folder / "V1__create.sql").write_text("CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY, note text);\n")
    report = lint_catalog(discover("shop", "postgresql", folder))
    assert report.findings == [] and report.risk == "low" and report.max_severity is None
    assert not report.destructive and report.blocking("info") == []


def test_elasticsearch_alias_state_carries_across_files(tmp_path):
    folder = tmp_path / "elasticsearch"
    folder.mkdir()
    steps = lambda *s: json.dumps({"description": "t", "steps": list(s)})  # noqa: E731
    (folder / "1-v1.json").write_text(steps({"create_index": {"index": "products_v1"}},
                                            {"switch_alias": {"alias": "products", "from": None, "to": "products_v1"}}))
    (folder / "2-drop.json").write_text(steps({"delete_index": {"index": "products_v1"}}))
    report = lint_catalog(discover("shop", "elasticsearch", folder))
    [f] = [f for f in report.findings if f.rule == "es-delete-index-behind-alias"]
    assert f.file.endswith("2-drop.json") and f.severity == "critical"


def test_validate_in_the_same_transaction_as_add_not_valid_gains_nothing(tmp_path):
    same_file = ("ALTER TABLE orders ADD CONSTRAINT pos CHECK (total >= 0) NOT VALID;\n"
                 "ALTER TABLE orders VALIDATE CONSTRAINT pos;\n")
    [f] = [f for f in lint_migration(migration(tmp_path / "a", "postgresql", same_file))
           if f.rule == "constraint-missing-not-valid"]
    assert f.line == 2 and "next migration" in f.fix
    split = "ALTER TABLE orders VALIDATE CONSTRAINT pos;\n"  # the ADD … NOT VALID ran in an earlier file
    assert "constraint-missing-not-valid" not in {f.rule for f in lint_migration(migration(tmp_path / "b", "postgresql", split))}


def test_set_not_null_after_a_check_validated_in_an_earlier_file_does_not_scan(tmp_path):
    folder = tmp_path / "postgresql"
    folder.mkdir()
    (folder / "V1__check.sql").write_text(
        "ALTER TABLE users ADD CONSTRAINT name_present CHECK (full_name IS NOT NULL) NOT VALID;\n")
    (folder / "V2__not_null.sql").write_text(
        "ALTER TABLE users VALIDATE CONSTRAINT name_present;\n"
        "ALTER TABLE users ALTER COLUMN full_name SET NOT NULL;\n"
        "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n")
    report = lint_catalog(discover("shop", "postgresql", folder))
    hits = [f for f in report.findings if f.rule == "adding-not-nullable-field"]
    # full_name is covered by the validated CHECK from V1; email has no such CHECK and still scans
    assert [(f.file.rsplit("/", 1)[-1], f.line) for f in hits] == [("V2__not_null.sql", 3)]
