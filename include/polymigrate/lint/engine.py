"""Run the rules over migrations: findings, impact estimates, suppressions."""

from __future__ import annotations

import importlib

from polymigrate.adapters import TECHNOLOGIES
from polymigrate.catalog import DomainCatalog, Migration
from polymigrate.lint import collisions, suppress
from polymigrate.lint.model import Finding, LintReport
from polymigrate.lint.registry import RULES, canonical, get
from polymigrate.lint.risk import StatsReader, estimate, statement_risk
from polymigrate.lint.source import Source, prepare


def _findings(src: Source) -> list[Finding]:
    out = []
    for rule in RULES:
        if not rule.applies_to(src):
            continue
        try:
            hits = list(rule.check(src))
        except Exception as exc:  # one broken rule (or a surprising file shape) must not hide the others
            out.append(Finding(rule.name, "info", f"rule could not check this file: {type(exc).__name__}: {exc}",
                               src.file, None, technology=src.technology))
            continue
        for h in hits:
            out.append(Finding(rule.name, h.severity or rule.severity, h.message or rule.summary, src.file, h.line,
                               statement=h.statement, fix=h.fix or rule.fix, destructive=rule.destructive,
                               technology=src.technology))
    return out


def _rescore(src: Source, findings: list[Finding], impacts_by_line: dict[int, list]) -> None:
    """With live statistics, lock/rewrite rules take the level of what the statement really costs.

    A statement touching a table the target does not have keeps its rule's own severity (never
    lowered: fail closed) and gets a ``table-not-found-on-target`` finding of its own.
    """
    for f in findings:
        rule = get(f.rule)
        if rule.impact and f.line in impacts_by_line:
            impacts = impacts_by_line[f.line]
            if all(i.risk != "unknown" for i in impacts):
                f.severity = statement_risk(impacts)
            notes = "; ".join(i.note for i in impacts if (i.seconds is not None or i.risk == "unknown") and i.note)
            if notes:
                f.message += f" [on target: {notes}]"
    rule = get("table-not-found-on-target")
    for line, impacts in impacts_by_line.items():
        for i in impacts:
            if i.risk == "unknown":
                findings.append(Finding(rule.name, rule.severity, f"{i.table}: {i.note}", src.file, line,
                                        statement=i.statement, fix=rule.fix, technology=src.technology))


def _suppress(src: Source, findings: list[Finding]) -> None:
    spans = {s.line: s.end_line for s in src.statements}
    directives = suppress.parse(src.text, src.data)
    for f in findings:
        if f.rule == "suppression-missing-reason":
            continue
        for d in directives:
            if d.covers(f.rule, f.line, spans.get(f.line, f.line)) or any(
                    canonical(r) == f.rule and d.covers(r, f.line, spans.get(f.line, f.line)) for r in d.rules):
                f.suppressed, f.suppression_reason, d.used = True, d.reason, True
                break
    for d in directives:
        if not d.reason:
            continue
        for name in d.rules:
            if canonical(name) is None:
                rule = get("unknown-rule-in-suppression")
                findings.append(Finding(rule.name, rule.severity, f"lint-ignore names unknown rule '{name}'", src.file,
                                        d.line, statement=f"lint-ignore {name}", fix=rule.fix, technology=src.technology))
        if not d.used and all(canonical(n) for n in d.rules):
            rule = get("unused-suppression")
            findings.append(Finding(rule.name, rule.severity, f"lint-ignore {','.join(d.rules)} suppresses nothing",
                                    src.file, d.line, fix=rule.fix, technology=src.technology))


def lint_source(src: Source, stats: StatsReader | None = None) -> LintReport:
    """Findings and impacts of one prepared file."""
    report = LintReport(files=1, connected=stats is not None)
    findings = _findings(src)
    by_line: dict[int, list] = {}
    for stmt in src.statements:
        impacts = [i for i in estimate(src, stmt, stats) if i.lock is not None]
        if impacts:
            by_line[stmt.line] = impacts
            report.impacts += impacts
    if stats is not None:
        _rescore(src, findings, by_line)
    _suppress(src, findings)
    report.findings = sorted(findings, key=lambda f: (f.line or 0, f.rule))
    return report


def _stats(connection, schema: str | None) -> StatsReader | None:
    return StatsReader(connection, schema) if connection is not None else None


def _live_state(technology: str, client=None) -> dict:
    """The per-technology state the rules share, read from the target ``client`` when given: the
    descriptor's ``lint_state`` (an Elasticsearch target's live indices, a MongoDB database's
    collection statistics)."""
    spec = TECHNOLOGIES[technology].lint_state
    if client is None or spec is None:
        return {}
    key, path = spec
    module, _, name = path.partition(":")
    return {key: getattr(importlib.import_module(module), name)(client)}


def _clients(connection, search, mongo) -> dict[str, object]:
    """Lint's keyword arguments by the technology whose target each one reads."""
    return {"postgresql": connection, "elasticsearch": search, "mongodb": mongo}


def lint_file(migration: Migration, *, connection=None, placeholders=None, schema: str | None = None,
              state: dict | None = None, search=None, mongo=None) -> LintReport:
    """The full report (findings and impacts) of one migration."""
    stats = _stats(connection, schema) if migration.technology == "postgresql" else None
    client = _clients(connection, search, mongo).get(migration.technology)
    if state is None:
        state = _live_state(migration.technology, client)
    report = lint_source(prepare(migration, placeholders, state), stats)
    report.connected = report.connected or (client is not None and TECHNOLOGIES[migration.technology].lint_state
                                            is not None)
    return report


def lint_migration(migration: Migration, *, connection=None, placeholders=None, schema: str | None = None,
                   search=None) -> list[Finding]:
    """Findings of one migration on its own (no catalog context such as earlier alias switches)."""
    return lint_file(migration, connection=connection, placeholders=placeholders, schema=schema, search=search).findings


def lint_catalog(catalog: DomainCatalog, *, connection=None, placeholders=None, schema: str | None = None,
                 collisions_check: bool = True, search=None, mongo=None, labels=None) -> LintReport:
    """Lint every migration of a domain in the order they apply, plus version collisions.

    ``connection``: a psycopg (v3) connection to a PostgreSQL target, for impact-aware risk; only
    read (pg_class statistics). ``schema``: the domain's PostgreSQL schema, tried first for
    unqualified table names. ``search``: a ``SearchApi`` on an Elasticsearch/OpenSearch target, whose
    live mappings, document counts and sizes the Elasticsearch rules read. ``mongo``: a pymongo
    ``Database`` of the domain's MongoDB target, for collection statistics (read only). ``labels``: the
    domain's ``governance.LabelIndex``, shared by every technology's files (a copy into Redis is checked
    against a PostgreSQL column's label); it collects what is inherited and the regulated changes.
    """
    report = LintReport(connected=connection is not None or search is not None or mongo is not None)
    stats = _stats(connection, schema)
    clients = _clients(connection, search, mongo)
    for technology, migrations in catalog.migrations.items():
        state: dict = _live_state(technology, clients.get(technology))
        if labels is not None:
            state["labels"] = labels
            if technology == "postgresql" and connection is not None:
                from polymigrate.governance.sampling import pg_sampler
                state["value_sampler"] = pg_sampler(connection, schema)
        for m in migrations:
            src = prepare(m, placeholders, state)
            report.extend(lint_source(src, stats if technology == "postgresql" else None))
    if collisions_check:
        report.findings += collisions.find(catalog)
    return report
