"""Validation-stage lint: PostgreSQL rules on pglast (Squawk's names where they overlap), Atlas-style
rewrite/scan checks, impact-aware risk from live statistics, MongoDB / Redis Lua / Elasticsearch
rules, security checks and version collisions.

Public API::

    report = lint_catalog(catalog, connection=psycopg_conn)   # LintReport
    report.risk, report.max_severity, report.destructive, report.blocking("high"), report.to_dict()
    findings = lint_migration(migration)                      # list[Finding]

Rules live in ``polymigrate.lint.rules`` (one module per family) and are listed once in
``polymigrate.lint.registry.RULES``. User documentation: docs/lint.md.
"""

from polymigrate.lint.engine import lint_catalog, lint_file, lint_migration
from polymigrate.lint.model import RISK_LEVELS, Finding, Impact, LintReport
from polymigrate.lint.registry import RULES

__all__ = ["Finding", "Impact", "LintReport", "RISK_LEVELS", "RULES", "lint_catalog", "lint_file", "lint_migration"]
