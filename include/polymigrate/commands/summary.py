"""The text an approver reads in Airflow's Required Actions before choosing Approve or Reject: who may
answer, what changed since an earlier approval, pending migrations per region, lint findings and
suppressions, what staging has not run, rehearsal estimates, drift and the change-set hash.

Every line is Markdown Airflow renders; free text from people and files goes in inert code spans.
"""

from __future__ import annotations

from typing import Any

from polymigrate.catalog import phases_line
from polymigrate.policy import Decision

SUPPRESSIONS_SHOWN = 20
STAGING_SHOWN = 10  # files "not yet in staging" listed one per line; the plan task's log has them all
QUOTE = 8  # characters of a new change-set hash an approval of a re-opened request must quote
APPROVE_TASK = "approve"  # the DAG's task that collects approvals (polymigrate.blueprint)


def summary_markdown(domain: str, environment: str, summary: dict[str, Any], decision: Decision, eligible: list[str],
                     triggered_by: str, preview: dict[str, Any], override_reason: str | None = None) -> str:
    """What the approver reads before choosing Approve or Reject."""
    s = summary or {}
    lint = s.get("lint") or {}
    who = ", ".join(eligible)
    lines = [f"**{domain}** in **{environment}**, triggered by **{triggered_by}**: needs **{decision.required}** "
             f"approval(s) from distinct people ({who})."]
    # what everyone else gets from Airflow is a bare "Access Denied": say here why
    lines.append(f"Only {who or 'nobody'} may answer: Airflow refuses anyone else's Approve or Reject "
                 "with \"Access Denied\" (" + ("the person who triggered the run may not approve it, four-eyes; "
                                               if triggered_by not in eligible else "")
                 + "others lack an approving role in migration_specs/approvers.yaml).")
    if s.get("previous_hash"):
        changes = s.get("changes")
        lines += ["", f"**Changed since the last approval** (`{s['previous_hash'][:12]}` → "
                  f"`{str(s.get('changeset_hash', '?'))[:12]}`); approvals of the earlier files do not count:"]
        if changes is None:
            lines.append("- the earlier file list is not on record: review every file")
        else:
            lines += [f"- {what}: " + ", ".join(f"`{f}`" for f in changes.get(what, []))
                      for what in ("changed", "added", "removed") if changes.get(what)] or \
                     ["- no file differs (the placeholders did)"]
    if decision.compliance_required:
        regulated = s.get("regulated") or []
        lines.append(f"**Compliance sign-off required**: {len(regulated)} regulated change(s) to labelled data "
                     "(docs/governance.md); besides the approvals above, one holder of a compliance role must "
                     "approve" + (f" (signed off so far: {', '.join(decision.signed_off_by)})" if decision.signed_off_by
                                  else "") + ":")
        for r in regulated[:10]:
            lines.append(f"  - {r.get('action')} `{r.get('object')}` ({r.get('kind')}/{r.get('level')}) in "
                         f"`{r.get('file')}`:{r.get('line')}")
    if decision.escalated:
        lines.append("The bar is raised: " + ("**emergency override** requested" if decision.override else
                     "high risk or destructive change set") + ".")
    if override_reason:
        lines.append(f"Override reason given: {_quoted(override_reason)} (what staging has not confirmed runs anyway).")
    from polymigrate import TECHNOLOGIES

    # the order everyone knows (postgresql, mongodb, redis, elasticsearch), not the domain's execution order
    techs = dict(sorted((s.get("migrations") or {}).items(),
                        key=lambda kv: TECHNOLOGIES.index(kv[0]) if kv[0] in TECHNOLOGIES else len(TECHNOLOGIES)))
    regions = preview.get("regions") or {}
    header = "| region | " + " | ".join(techs) + " |\n|---|" + "---|" * len(techs)
    rows = [f"| {r} | " + " | ".join(str(counts.get(t, "-")) for t in techs) + " |" for r, counts in regions.items()]
    lines += ["", "**Pending migrations per region** (from each target's ledger now):", "", header, *rows]
    problems = preview.get("problems") or ([preview["error"]] if preview.get("error") else [])
    if problems:
        lines += ["", "Some ledgers could not be read, so their counts above are not known (files per technology: "
                  + ", ".join(f"{t} {n}" for t, n in techs.items()) + "):"]
        lines += [f"- {_quoted(p)}" for p in problems]
    if s.get("phases"):
        lines.append("\n**Release phases** (files per technology, run phase-major in each region): "
                     + phases_line(s["phases"], (s.get("contract_gates") or {}).get("soak_minutes") or 0,
                                   bool((s.get("contract_gates") or {}).get("approval"))))
    destructive = "**yes**" if s.get("destructive") else "no"
    lines += ["", f"- lint risk: **{s.get('risk') or 'not assessed'}**, findings: {lint.get('findings', 0)}, "
              f"blocking: {lint.get('blocking', 0)}; destructive: {destructive}"]
    for f in lint.get("shown") or []:
        where = f.get("file") if f.get("line") is None else f"{f.get('file')}:{f.get('line')}"
        lines.append(f"  - **{f.get('severity')}** `{f.get('rule')}` in {where}"
                     + (" (blocks here; carried by the override)" if f.get("blocking") else ""))
    if lint.get("findings", 0) > len(lint.get("shown") or []) + len(s.get("suppressions") or []):
        lines.append("  - (the other findings, info or suppressed: the validate task's log)")
    for sup in (s.get("suppressions") or [])[:SUPPRESSIONS_SHOWN]:
        times = f" ({sup['count']} findings)" if (sup.get("count") or 1) > 1 else ""
        lines.append(f"  - suppressed `{sup.get('rule')}` in {sup.get('file')}:{sup.get('line')}{times}: "
                     f"{_quoted(str(sup.get('reason') or ''))}")
    if preview.get("staging") is not None:
        missing = preview["staging"]
        lines.append(f"- already succeeded in {preview.get('staging_env')}: "
                     + ("**everything pending**" if not missing else f"**no**, {len(missing)} not yet:"))
        lines += [f"  - {m}" for m in missing[:STAGING_SHOWN]]  # one file per line: a list, not a paragraph
        if len(missing) > STAGING_SHOWN:
            lines.append(f"  - … and {len(missing) - STAGING_SHOWN} more (the plan task's log lists them)")
    rehearsal = preview.get("rehearsal")
    if rehearsal:
        lines.append(f"- measured in {rehearsal.get('environment')} (slowest successful run of the same files), per region:")
        for region, est in (rehearsal.get("regions") or {}).items():
            secs = est.get("seconds")
            text = f"~{_duration(secs)}" if secs is not None else "no estimate"
            never = est.get("never_rehearsed") or []
            if never:
                text += f"; {len(never)} of {est.get('files')} file(s) never rehearsed"
            slow = ", ".join(f"{x['file']} {_duration(x['seconds'])}" for x in est.get("slowest") or [])
            lines.append(f"  - {region}: {text}" + (f" (slowest: {slow})" if slow else ""))
        if rehearsal.get("unreadable"):
            lines.append(f"  - not readable: {', '.join(rehearsal['unreadable'])}")
    drift = s.get("drift")
    if drift:
        count = int(drift.get("count") or 0)
        lines.append(f"- drift (report of {str(drift.get('at', '?'))[:16]} UTC): " + (
            "none: every target matches the snapshot of its last successful run" if not count else
            f"**{count} object(s) changed outside migrations**: " + "; ".join(_quoted(i) for i in drift.get("items") or [])
            + (" …" if count > len(drift.get("items") or []) else "")))
    lines += [f"- change-set hash: `{s.get('changeset_hash', '?')}` (execution refuses if any file or "
              "placeholder differs from what you approve)",
              "", "Each answer is recorded with your name; this request reopens until enough distinct "
              "people approved. **Reject** (with a comment) ends the run.",
              "", f"_If the files change and this request re-opens, Airflow keeps showing this text: the new "
              f"summary, with what changed, is in the log of the `{APPROVE_TASK}` task's latest try, and an "
              f"approval counts only if its comment quotes the first {QUOTE} characters of the new hash._"]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _quoted(text: str) -> str:
    """Free text from a triggerer or a file author as one inert code span: no Markdown of theirs can
    add lines that look like the facts approvers rely on."""
    flat = " ".join(text.split()).replace("`", "'")
    return f"`{flat[:500]}`"
