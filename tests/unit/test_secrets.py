"""One definition of a written-down credential: a spec holding one is rejected by the loader, a
migration file holding one is flagged by lint, and a ${placeholder} passes both."""

from __future__ import annotations

import pytest

from polymigrate.lint import lint_migration
from polymigrate.spec import load_project
from tests.unit.lint.helpers import migration

CREDENTIALS = [
    "postgresql://app:hunter2secret@db:5432/shop",
    "redis://:hunter2secret@cache:6379/0",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLXBhcnQ",
    "ASIAIOSFODNN7EXAMPLE",
    "ghp_hunter2secretABCDEFGHIJKLMNOPQRS",
    "xoxb-123456789012-abcdefghij",
    "-----BEGIN OPENSSH PRIVATE KEY-----",
]


def spec_problems(tmp_path, value: str) -> list[str]:
    (tmp_path / "environments").mkdir(parents=True, exist_ok=True)
    (tmp_path / "environments" / "development.yaml").write_text("regions: {r1: null}\n")
    (tmp_path / "shop" / "postgresql").mkdir(parents=True, exist_ok=True)
    (tmp_path / "shop" / "domain.yaml").write_text(f"description: 'see {value}'\ntechnologies: {{postgresql: {{}}}}\n")
    return [p.message for p in load_project(tmp_path).problems if "credential" in p.message or "looks like" in p.message
            or "password" in p.message]


def lint_rules(tmp_path, value: str) -> list[str]:
    m = migration(tmp_path, "postgresql", f"-- see {value}\nSELECT 1;\n")
    return [f.rule for f in lint_migration(m)]


@pytest.mark.parametrize("value", CREDENTIALS)
def test_the_loader_and_lint_find_the_same_credentials(tmp_path, value):
    assert spec_problems(tmp_path / "spec", value), value
    assert "secret-in-migration" in lint_rules(tmp_path / "lint", value), value


def test_a_placeholder_is_not_a_credential(tmp_path):
    value = "postgresql://app:${db_password}@db:5432/shop"
    assert spec_problems(tmp_path / "spec", value) == []
    assert "secret-in-migration" not in lint_rules(tmp_path / "lint", value)
