"""The ``validate`` step: a domain's files and lint as the approval summary, also when the files
changed after an approval in the same run (a fix, then a cleared task) and the new change set is
evaluated again. Used by ``verbs`` (the steps of a run) and ``approval`` (the re-evaluation).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from polymigrate.catalog import DomainCatalog, phase_counts
from polymigrate.commands.context import EVENT_LIST_CAP, Run
from polymigrate.errors import PolicyRefused


def lint(catalog: DomainCatalog, *, connection: Any = None, schema: str | None = None, labels: Any = None):
    """The lint report of a domain (``polymigrate.lint``): findings, risk, destructive, suppressions.
    ``labels``: the domain's ``LabelIndex`` (governance rules; it collects the regulated changes)."""
    from polymigrate.lint import lint_catalog  # pglast: imported when linting, not at DAG parse

    return lint_catalog(catalog, connection=connection, schema=schema, labels=labels)


FINDINGS_SHOWN = 20  # findings an approver reads in the summary (the validate log has them all)


def file_digests(run: Run) -> dict[str, str]:
    """``technology/script`` → short content hash of every file the change-set hash covers, plus the
    placeholders: what "changed since the last approval" compares, so approvers read file names."""
    from polymigrate.commands.project import all_migrations
    from polymigrate.checksums import sha256

    env = run.environment
    digests = {f"{m.technology}/{m.script}": m.sha256[:16] for m in all_migrations(run.domain, run.catalog)}
    placeholders = {"": dict(env.placeholders), **{n: dict(r.placeholders) for n, r in env.regions.items()}}
    digests["placeholders"] = sha256(json.dumps(placeholders, sort_keys=True))[:16]
    return digests


def changes_between(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    """Files added, changed and removed from ``old`` to ``new`` (``file_digests`` of each)."""
    return {"added": sorted(new.keys() - old.keys()), "removed": sorted(old.keys() - new.keys()),
            "changed": sorted(k for k in new.keys() & old.keys() if new[k] != old[k])}


def summarize(run: Run) -> tuple[dict[str, Any], list]:
    """(what an approval is about, the lint findings that block here): files per technology, lint
    risk, the findings themselves, destructive, suppressions and the change-set hash. Records nothing."""
    from polymigrate.lint.model import severity_rank

    counts = {tech: len(run.catalog.applicable(tech)) for tech in run.domain.technology_order()}
    from polymigrate.governance.labels import LabelIndex

    labels = LabelIndex.of(run.domain.labels)
    report = lint(run.catalog, labels=labels)
    blocking = report.blocking(run.policy.lint_block_at)
    for f in report.findings:
        run.log.info("lint: %s", f)
    # every destructive change carries a reasoned suppression: allowed where destructive changes are
    # banned, but only through the stricter approval
    waived = report.destructive and not any(f.destructive and not f.suppressed for f in report.findings)
    # approvers decide on the findings, not on their count: worst first, where each one is
    shown = sorted((f for f in report.findings if not f.suppressed and f.severity != "info"),
                   key=lambda f: -severity_rank(f.severity))
    phases = phase_counts(run.catalog, run.domain.technology_order())
    gates = {"soak_minutes": run.policy.contract_soak_minutes, "approval": run.policy.contract_approval}
    return {"migrations": counts, **({"phases": phases, "contract_gates": gates} if phases else {}), "risk": report.risk,
            "destructive": report.destructive, "destructive_waived": waived,
            # regulated changes (docs/governance.md): a compliance sign-off where the policy names compliance_roles
            **({"regulated": [_regulated(run, r) for r in labels.regulated][:EVENT_LIST_CAP]}
               if labels.regulated else {}),
            "suppressions": _suppressions(run, report.suppressions)[:EVENT_LIST_CAP],
            "changeset_hash": run.changeset_hash(),
            "files": file_digests(run),
            "lint": {"findings": len(report.findings), "blocking": len(blocking),
                     "shown": [{"rule": f.rule, "severity": f.severity, "file": _relative(run, f.file), "line": f.line,
                                "blocking": f in blocking} for f in shown[:FINDINGS_SHOWN]]},
            **_drift(run)}, blocking


def _regulated(run: Run, change: dict) -> dict:
    """A regulated change as the audit store keeps it: the file as the repository names it, and the
    regulations it falls under in each region of this environment (read by the compliance report)."""
    from polymigrate.governance.enforce import regulations

    return {**change, "file": _relative(run, change["file"]),
            "regulations": {r.name: regulations(change["kind"], list(r.jurisdictions))
                            for r in run.project.regions_of(run.domain, run.environment)}}


def _drift(run: Run) -> dict[str, Any]:
    """The latest drift report of this domain and environment, for the approvers (never blocks)."""
    from polymigrate.commands.drift import latest_drift

    found = latest_drift(run.sink, run.domain.name, run.environment.name)
    return {"drift": found} if found else {}


def _suppressions(run: Run, found: list[dict]) -> list[dict]:
    """Each suppression once, its file as the repository names it: one suppressed statement can trip a
    rule twice (two columns dropped in one ALTER), and the approver read the same line twice."""
    out: dict[tuple, dict] = {}
    for sup in found:
        key = (sup.get("rule"), sup.get("file"), sup.get("line"))
        if key in out:
            out[key]["count"] = out[key].get("count", 1) + 1
        else:
            out[key] = {**sup, "file": _relative(run, sup["file"]) if sup.get("file") else sup.get("file")}
    return list(out.values())


def _relative(run: Run, path: str) -> str:
    """A file as the repository names it (``shop/postgresql/V2__x.sql``), not where a worker checked it out."""
    try:
        return str(Path(path).resolve().relative_to(Path(run.project.root).resolve()))
    except ValueError:
        return path


def validate(run: Run, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The domain's files and lint: a summary for the approval (recorded as ``validated``), or
    ``PolicyRefused`` for blocking findings (recorded as ``refused``) unless an override carries them
    to the stricter approval.

    ``previous``: the summary of the change set approved earlier in this run, when the files changed
    since (a fix, then a cleared task): the new summary then says what changed (``changes``)."""
    policy, params = run.policy, run.params
    summary, blocking = summarize(run)
    if previous is not None:
        summary["previous_hash"] = previous.get("changeset_hash") or ""
        old = previous.get("files")
        summary["changes"] = None if old is None else changes_between(old, summary["files"])
        run.log.info("Re-evaluating: the files changed since change set %s was approved (now %s): %s",
                     summary["previous_hash"][:12], summary["changeset_hash"][:12], describe_changes(summary["changes"]))
    if blocking and params.override:
        run.log.warning("%d blocking lint finding(s) pass to approval under the emergency override "
                        "(it needs the stricter approval): %s", len(blocking), params.override_reason)
    elif blocking:
        run.emit("refused", details={"reason": f"lint findings at or above {policy.lint_block_at}",
                                     "findings": [str(f) for f in blocking][:EVENT_LIST_CAP],
                                     **({"changeset_hash": summary["changeset_hash"]} if previous is not None else {})})
        raise PolicyRefused(f"{len(blocking)} lint finding(s) at or above '{policy.lint_block_at}' block "
                            f"{run.environment.name}:\n" + "\n".join(f"  - {f}" for f in blocking)
                            + "\n(fix the migration, or waive the finding in the file as the lint docs describe)")
    suites = expectation_suites(run)  # a bad suite fails here, before approval, not after execute
    summary["expectations"] = len(suites)
    for note in run.catalog.notes:
        run.log.info("note: %s", note)
    run.log.info("Valid: %s", ", ".join(f"{t} {n}" for t, n in summary["migrations"].items()) or "no technology")
    run.emit("validated", details=summary)
    return summary


def describe_changes(changes: dict[str, list[str]] | None) -> str:
    """``changed: postgresql/V2__orders.sql; added: …`` (``unknown`` when nothing was recorded to compare)."""
    if not changes:
        return "unknown (no file list of the approved change set on record)"
    parts = [f"{what}: {', '.join(changes[what][:10])}" + (f" and {len(changes[what]) - 10} more"
                                                           if len(changes[what]) > 10 else "")
             for what in ("changed", "added", "removed") if changes.get(what)]
    return "; ".join(parts) or "no file differs (the placeholders or the hash scheme did)"


def expectation_suites(run: Run) -> list:
    """The domain's expectation suites (``<domain>/expectations/``); ``SpecError`` naming each bad one."""
    from polymigrate.errors import SpecError
    from polymigrate.expectations import load_suites

    regions = sorted({r.name for env in run.project.environments_of(run.domain)
                      for r in run.project.regions_of(run.domain, env)})
    suites, problems = load_suites(run.domain.path, regions=regions, domain=run.domain.name)
    if problems:
        raise SpecError(problems)
    return suites
