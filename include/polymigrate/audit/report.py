"""Audit reports for reviewers and auditors: CSV (every event), JSON (runs and events), HTML.

The HTML report is meant for people who do not read SQL: one section per run saying what changed,
where, who triggered and approved it, how it ended and how long each migration took, plus a chart
of migration durations per region over time. It is one self-contained file (inline SVG, no
scripts, no external assets) so it opens offline and can be attached to an audit ticket.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from typing import Any, Iterable

from jinja2 import Environment

from polymigrate.audit.compliance import compliance
from polymigrate.audit.history import RunSummary, summarize_runs
from polymigrate.audit.store import COLUMNS, AuditRecord

FORMATS = ("csv", "json", "html")
CSV_FIELDS = ("id",) + COLUMNS + ("details", "hash")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json", "html": "text/html; charset=utf-8"}
# Colour-blind-safe palette (Okabe–Ito), one colour per region.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def render(records: Iterable[AuditRecord], fmt: str, *, filters: dict[str, Any] | None = None,
           runs: list[RunSummary] | None = None) -> str:
    """The report in ``fmt`` (csv, json or html) over ``records`` (chain order).

    ``runs`` are the run summaries to show (``select`` gives them whole, whatever the filters);
    without them the runs are summarised from ``records`` alone.
    """
    records = list(records)
    if fmt == "csv":
        return render_csv(records)
    if fmt == "json":
        return render_json(records, filters=filters, runs=runs)
    if fmt == "html":
        return render_html(records, filters=filters, runs=runs)
    raise ValueError(f"unknown report format {fmt!r}; one of {', '.join(FORMATS)}")


def select(store, **query: Any) -> tuple[list[AuditRecord], list[RunSummary]]:
    """(events matching ``query``, the runs they belong to, each summarised from all its events).

    A filter chooses which runs a report is about, not which of a run's facts it tells: the events
    of an approval have no region and those of a migration no approver, so a run summarised from a
    region- or kind-filtered selection read "no approval recorded" or "No migration was applied".
    A ``region`` filter still limits each run's migrations to that region.
    """
    records = store.query(**query)
    keys = {(r.event.run_id, r.event.domain, r.event.environment) for r in records if r.event.run_id}
    whole = [r for r in store.query(run_id=sorted({k[0] for k in keys}))
             if (r.event.run_id, r.event.domain, r.event.environment) in keys] if keys else []
    runs = summarize_runs(whole + [r for r in records if not r.event.run_id])
    region = query.get("region")
    if region:
        for run in runs:
            run.migrations = [m for m in run.migrations if m.region == region]
            run.verified_regions = [r for r in run.verified_regions if r == region]
            run.planned_regions = [r for r in run.planned_regions if r == region]
            run.failures = [f for f in run.failures if f.region in (None, region)]
    return records, runs


def render_csv(records: list[AuditRecord]) -> str:
    """One line per event with its chain hash, so an auditor can re-check any row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in records:
        d = r.event.to_dict()
        writer.writerow([_cell(v) for v in (r.id, *("" if d[c] is None else d[c] for c in COLUMNS),
                                            json.dumps(d["details"], sort_keys=True, ensure_ascii=False), r.hash)])
    return out.getvalue()


def _cell(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (=, +, -, @) is prefixed with an apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def render_json(records: list[AuditRecord], *, filters: dict[str, Any] | None = None,
                runs: list[RunSummary] | None = None) -> str:
    runs = summarize_runs(records) if runs is None else runs
    doc = {"generated_at": _now().isoformat(), "filters": _clean(filters),
           "runs": [r.to_dict() for r in runs], "compliance": compliance(records, runs),
           "events": [{"id": r.id, "hash": r.hash, **r.event.to_dict()} for r in records]}
    return json.dumps(doc, indent=2, ensure_ascii=False, default=str)


def render_html(records: list[AuditRecord], *, filters: dict[str, Any] | None = None,
                runs: list[RunSummary] | None = None) -> str:
    runs = summarize_runs(records) if runs is None else runs
    return _TEMPLATE.render(
        generated_at=_now(), filters=_clean(filters), runs=list(reversed(runs)), events=len(records),
        chart=duration_chart_svg(runs), styles=STYLES, fmt_ms=fmt_ms, fmt_time=fmt_time,
        compliance=compliance(records, runs))


def _clean(filters: dict[str, Any] | None) -> dict[str, str]:
    return {k: str(v) for k, v in (filters or {}).items() if v not in (None, "")}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def fmt_ms(ms: int | None) -> str:
    """Durations as people say them: 850 ms, 4.2 s, 3 min 5 s, 1 h 2 min."""
    if ms is None:
        return "–"
    if ms < 1000:
        return f"{ms} ms"
    s = ms / 1000
    if s < 60:
        return f"{s:.1f} s"
    m, s = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


def fmt_time(value: datetime | None) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "–"


def duration_chart_svg(runs: list[RunSummary], *, width: int = 760, height: int = 260) -> str:
    """Migration durations per region over time, as inline SVG (one coloured series per region).

    Each point is one finished migration; hovering shows its script, region and duration (SVG
    ``<title>``, no script needed).
    """
    points: dict[str, list[tuple[datetime, int, str]]] = {}
    for run in runs:
        for m in run.migrations:
            if m.finished_at and m.duration_ms is not None:
                points.setdefault(m.region or "(no region)", []).append(
                    (m.finished_at, m.duration_ms, f"{run.domain} · {m.technology} · {m.label}"))
    if not points:
        return '<p class="muted">No finished migrations in this period, so there is nothing to chart.</p>'
    left, right, top, bottom = 70, 150, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    times = [p[0].timestamp() for ps in points.values() for p in ps]
    t0, t1 = min(times), max(times)
    span = (t1 - t0) or 1.0
    y_max = max(p[1] for ps in points.values() for p in ps) or 1
    y_max = _nice_ceiling(y_max)

    def x(t: datetime) -> float:
        return left + (t.timestamp() - t0) / span * plot_w if t1 > t0 else left + plot_w / 2

    def y(ms: int) -> float:
        return top + plot_h - ms / y_max * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" aria-label="Migration durations per region over time">',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" stroke="#ccc"/>']
    for i in range(5):
        v = y_max * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e5e5"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="11">{_esc(fmt_ms(int(v)))}</text>')
    ticks = [(t0, left, "start"), (t1, left + plot_w, "end")] if t1 > t0 else [(t0, left + plot_w / 2, "middle")]
    for t, xt, anchor in ticks:
        label = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M")
        parts.append(f'<text x="{xt:.1f}" y="{top + plot_h + 16}" text-anchor="{anchor}" font-size="11">{label} UTC</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle" font-size="11" '
                 f'fill="#555">time the migration finished</text>')
    for n, (region, ps) in enumerate(sorted(points.items())):
        colour = PALETTE[n % len(PALETTE)]
        ps.sort()
        if len(ps) > 1:
            coords = " ".join(f"{x(t):.1f},{y(ms):.1f}" for t, ms, _ in ps)
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5" opacity="0.6"/>')
        for t, ms, label in ps:
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(ms):.1f}" r="4" fill="{colour}">'
                         f'<title>{_esc(region)}: {_esc(label)} took {_esc(fmt_ms(ms))}</title></circle>')
        ly = top + 14 + n * 18
        parts.append(f'<rect x="{left + plot_w + 14}" y="{ly - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{left + plot_w + 30}" y="{ly}" font-size="12" class="legend">{_esc(region)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _nice_ceiling(value: float) -> float:
    """The next 1-2-5 step above ``value``, so the axis reads 0, 250 ms, 500 ms… not 0, 237 ms…"""
    step = 1.0
    while step * 10 <= value:
        step *= 10
    for m in (1, 2, 2.5, 5, 10):
        if m * step >= value:
            return m * step
    return 10 * step


def _esc(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;"))


STYLES = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #1d1d1f; margin: 24px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.muted { color: #666; } .small { font-size: 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.run { border: 1px solid #ddd; border-radius: 6px; padding: 8px 16px; margin: 12px 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.ok { background: #d9f2e3; color: #11602f; } .bad { background: #fbdcdc; color: #8a1414; }
.wait { background: #fff1cc; color: #6b4d00; } .neutral { background: #e8e8e8; color: #333; }
dl { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; margin: 6px 0; }
dt { color: #555; } dd { margin: 0; }
"""

_env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)


def outcome_class(outcome: str | None) -> str:
    """CSS class of an outcome badge (shared with the UI page)."""
    if not outcome:
        return "neutral"
    if outcome == "succeeded":
        return "ok"
    if outcome in ("failed", "refused by policy", "rejected", "halted before this region", "verification failed"):
        return "bad"
    if outcome in ("in progress", "awaiting approval"):
        return "wait"
    return "neutral"


_env.filters["outcome_class"] = outcome_class

_TEMPLATE = _env.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polymigrate audit report</title>
<style>{{ styles }}</style></head><body>
<h1>Database change report</h1>
<p class="muted">Generated {{ fmt_time(generated_at) }} from the polymigrate audit trail ({{ events }} recorded events).
{% if filters %}Filters: {% for k, v in filters.items() %}{{ k }} = <b>{{ v }}</b>{% if not loop.last %}, {% endif %}{% endfor %}.{% endif %}</p>
<p>Each run below is one execution of a domain's migrations in one environment. It says who started it,
who approved it, what changed in which region, how it ended and how long each change took.</p>
<h2>How long migrations took, per region</h2>
{{ chart | safe }}
<h2 id="compliance">Compliance</h2>
{% if not compliance.regulations %}<p class="muted">No regulated change (labelled data dropped, retyped or moved) in this selection.</p>{% endif %}
{% for regulation, changes in compliance.regulations.items() %}
<h3>{{ regulation }}: {{ changes | length }} regulated change(s)</h3>
<table class="regulated"><tr><th>Domain</th><th>Where</th><th>Change</th><th>Outcome</th><th>Approved by</th><th>Compliance sign-off</th></tr>
{% for c in changes %}
<tr><td>{{ c.domain }}</td><td>{{ c.environment }} / {{ c.region }}</td><td>{{ c.action }} <code>{{ c.object }}</code> ({{ c.kind }})<div class="small">{{ c.file }}:{{ c.line }}</div></td>
<td>{{ c.outcome }}</td><td>{{ c.approved_by | join(", ") or "–" }}</td><td>{{ c.signed_off_by | join(", ") or "none recorded" }}</td></tr>
{% endfor %}
</table>
{% endfor %}
{% if compliance.violations %}
<h3>Violations</h3>
<table class="violations"><tr><th>What</th><th>Domain</th><th>Where</th><th>Detail</th><th>When</th></tr>
{% for v in compliance.violations %}
<tr><td>{{ v.what }}</td><td>{{ v.domain }}</td><td>{{ [v.environment, v.region] | select | join(" / ") }}</td>
<td class="small">{% if v.rule %}rule {{ v.rule }}: {{ v.label }} in {{ v.script }}{% else %}{{ v.label }}: {{ v.detail }}{% endif %}</td><td>{{ v.at }}</td></tr>
{% endfor %}
</table>{% endif %}
{% if compliance.labelled_objects %}
<h3>Labelled objects per region</h3>
<table class="labelled"><tr><th>Where</th><th>Domain</th><th>Object</th><th>Label</th><th>Retention</th></tr>
{% for where, objects in compliance.labelled_objects.items() %}{% for x in objects %}
<tr><td>{{ where }}</td><td>{{ x.domain }}</td><td><code>{{ x.object }}</code>{% if x.derived_from %} <span class="small">(from {{ x.derived_from }})</span>{% endif %}</td><td>{{ x.kind }}/{{ x.level }}</td><td>{{ x.retention or "–" }}</td></tr>
{% endfor %}{% endfor %}
</table>{% endif %}
<h2>Runs ({{ runs | length }}, newest first)</h2>
{% if not runs %}<p class="muted">No runs recorded in this period.</p>{% endif %}
{% for run in runs %}
<section class="run">
<h3>{{ run.domain }} in {{ run.environment }} <span class="badge {{ run.outcome | outcome_class }}">{{ run.outcome }}</span></h3>
<dl>
<dt>When</dt><dd>{{ fmt_time(run.started_at) }} → {{ fmt_time(run.finished_at) }} ({{ fmt_ms(run.duration_ms) }})</dd>
<dt>Triggered by</dt><dd>{{ run.triggered_by or "not recorded" }}</dd>
<dt>Approved by</dt><dd>{% if run.approvers %}{{ run.approvers | join(", ") }}{% elif run.auto_approved %}nobody needed to: the policy approved automatically ({{ run.auto_approved }}){% else %}no approval recorded{% endif %}</dd>
{% if run.rejected_by %}<dt>Rejected by</dt><dd>{{ run.rejected_by | join(", ") }}</dd>{% endif %}
{% if run.overridden_by %}<dt>Overridden by</dt><dd>{{ run.overridden_by | join(", ") }}</dd>{% endif %}
<dt>Regions</dt><dd>{{ run.regions | join(", ") if run.regions else "–" }}{% if run.verified_regions %} (verified: {{ run.verified_regions | join(", ") }}){% endif %}
{% set unreached = run.planned_regions | reject("in", run.regions) | list %}{% if unreached %}; planned but not reached: {{ unreached | join(", ") }}{% endif %}</dd>
<dt>Run</dt><dd>{% if run.run_url %}<a href="{{ run.run_url }}">{{ run.run_id }}</a>{% else %}{{ run.run_id }}{% endif %}{% if run.dag_id %} <span class="muted small">({{ run.dag_id }})</span>{% endif %}</dd>
{% if run.plan_hash %}<dt>Plan</dt><dd class="small">{{ run.plan_hash }}</dd>{% endif %}
</dl>
{% if run.migrations %}
<table><tr><th>Region</th><th>Technology</th><th>Change</th><th>Version</th><th>Outcome</th><th>Duration</th><th>Tries</th></tr>
{% for m in run.migrations %}
<tr><td>{{ m.region or "–" }}</td><td>{{ m.technology or "–" }}</td><td>{{ m.script or "–" }}</td><td>{{ m.version or "repeatable" }}</td>
<td><span class="badge {{ 'ok' if m.outcome == 'succeeded' else 'bad' if m.outcome == 'failed' else 'neutral' }}">{{ m.outcome }}</span>{% if m.error %}<div class="small">{{ m.error }}</div>{% endif %}</td>
<td>{{ fmt_ms(m.duration_ms) }}</td><td>{{ m.attempts }}</td></tr>
{% endfor %}
</table>
{% elif run.failed_tasks() %}<p>No migration was applied: the run failed first.</p>
{% else %}<p class="muted">No migration was applied in this run.</p>{% endif %}
{% if run.failures %}
<table class="failures"><tr><th>Failed task</th><th>Where</th><th>When</th><th>Error</th></tr>
{% for f in run.failures %}
<tr><td><code>{{ f.task_id or "?" }}</code>{% if f.try_number %} <span class="small muted">try {{ f.try_number }}</span>{% endif %}{% if f.resolved %} <span class="badge neutral">retried since</span>{% endif %}</td>
<td>{{ [f.region, f.technology] | select | join(" / ") or "the whole run" }}</td><td>{{ fmt_time(f.at) }}</td>
<td class="small"><pre style="white-space: pre-wrap; margin: 0">{{ f.error }}</pre></td></tr>
{% endfor %}
</table>{% endif %}
{% if run.notes %}<ul>{% for n in run.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
</section>
{% endfor %}
</body></html>
""")
