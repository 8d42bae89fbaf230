"""HTML of the audit page: server-rendered, no JavaScript, no external assets (machines are offline)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment

from polymigrate.audit import AUDIT_CONN_ID, run_url
from polymigrate.audit.compliance import compliance
from polymigrate.audit.history import person
from polymigrate.audit.report import STYLES, fmt_ms, fmt_time, outcome_class
from polymigrate.connections import env_var
from polymigrate.events import KINDS

_env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_env.filters["outcome_class"] = outcome_class
_env.filters["person"] = person


def event_link(e) -> str | None:
    """This Airflow's page of the event's run (a link recorded then may name an old port)."""
    return run_url(e.dag_id, e.run_id) or e.details.get("run_url")


_env.globals["event_link"] = event_link


def run_report(run) -> str | None:
    """The run's full report on this page (relative to its base); 403 for those who may not read it."""
    from urllib.parse import quote

    from polymigrate.audit.history import NO_RUN
    from polymigrate.blueprint import dag_id

    if run.run_id == NO_RUN:
        return None
    return f"runs/{quote(run.run_id, safe='')}?{urlencode({'dag_id': dag_id(run.domain, run.environment)})}"


_env.globals["run_report"] = run_report

PAGE_STYLES = STYLES + """
body { margin: 16px; }
form.filters { display: flex; flex-wrap: wrap; gap: 8px 12px; align-items: end; margin: 8px 0; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: #555; }
form.filters input, form.filters select { font-size: 13px; padding: 3px 6px; }
.exports a { margin-right: 10px; }
td.cell { min-width: 110px; } .version { font-weight: 600; }
.pending { background: #fff1cc; color: #6b4d00; }
"""


def _qs(filters: dict[str, str], **extra: str) -> str:
    return urlencode({k: v for k, v in {**filters, **extra}.items() if v})


_PAGE = _env.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polymigrate · audit</title><style>{{ styles }}</style></head>
<body>
<h1>Database migrations: state and audit trail</h1>
<p class="muted">From the tamper-evident audit store (connection <code>{{ conn_id }}</code>).</p>

<h2>Current state</h2>
{% if not rows %}<p class="muted" id="matrix-empty">No migration has been recorded yet{% if filters.domain or filters.environment or filters.region %} for this scope{% endif %}.</p>{% else %}
<table id="matrix">
<tr><th>Domain</th><th>Environment</th><th>Region</th>{% for t in technologies %}<th>{{ t }}</th>{% endfor %}<th>Last run</th></tr>
{% for r in rows %}
<tr data-domain="{{ r.domain }}" data-environment="{{ r.environment }}" data-region="{{ r.region }}">
<td>{{ r.domain }}</td><td>{{ r.environment }}</td><td>{{ r.region }}</td>
{% for t in technologies %}{% set c = r.cells.get(t) %}
<td class="cell">{% if c %}<span class="version">{{ c.version or "–" }}</span>{% if c.pending %} <span class="badge pending">{{ c.pending }} pending</span>{% elif c.pending == 0 %} <span class="small muted">up to date</span>{% endif %}{% else %}<span class="muted">–</span>{% endif %}</td>
{% endfor %}
<td>{% if r.last_run_outcome %}<span class="badge {{ r.last_run_outcome | outcome_class }}">{{ r.last_run_outcome }}</span>
{% if r.last_run_url %}<a href="{{ r.last_run_url }}" target="_top">{{ r.last_run_id }}</a>{% else %}<span class="small">{{ r.last_run_id }}</span>{% endif %}
<div class="small muted">{{ fmt_time(r.last_run_at) }}</div>{% else %}<span class="muted">–</span>{% endif %}</td>
</tr>
{% endfor %}
</table>{% endif %}

<h2>Recent runs</h2>
{% if not runs %}<p class="muted" id="runs-empty">No run in this selection.</p>{% else %}
<table id="runs">
<tr><th>Run</th><th>Domain</th><th>Environment</th><th>Outcome</th><th>Triggered by</th><th>Approved by</th><th>Why it failed</th></tr>
{% for run in runs %}
<tr data-run="{{ run.run_id }}" data-domain="{{ run.domain }}" data-environment="{{ run.environment }}">
<td>{% if run.run_url %}<a href="{{ run.run_url }}" target="_top" class="small">{{ run.run_id }}</a>{% else %}<span class="small">{{ run.run_id }}</span>{% endif %}<div class="small muted">{{ fmt_time(run.started_at) }}{% if run_report(run) %} · <a href="{{ base }}{{ run_report(run) }}" class="run-report">report</a>{% endif %}</div></td>
<td>{{ run.domain }}</td><td>{{ run.environment }}</td>
<td><span class="badge {{ run.outcome | outcome_class }}">{{ run.outcome }}</span></td>
<td>{{ run.triggered_by or "–" }}</td>
<td>{% if run.approvers %}{{ run.approvers | join(", ") }}{% elif run.auto_approved %}<span class="small">the policy, automatically</span>{% else %}–{% endif %}</td>
<td class="small failure">{% for f in run.failed_tasks() %}<div><code>{{ f.task_id }}</code>: {{ f.error | truncate(300) }}</div>{% endfor %}</td></tr>
{% endfor %}
</table>{% endif %}

<h2>Drift</h2>
{% if not drift %}<p class="muted" id="drift-empty">No drift report recorded{% if filters.domain or filters.environment %} for this scope{% endif %} (the nightly <code>drift__&lt;environment&gt;</code> DAGs write them).</p>{% else %}
<table id="drift">
<tr><th>Domain</th><th>Environment</th><th>Report (UTC)</th><th>Region</th><th>Technology</th><th>Object</th><th>What changed</th><th>Since</th></tr>
{% for rec in drift %}{% set e = rec.event %}{% set diffs = e.details.differences or [] %}
{% if not diffs %}
<tr data-domain="{{ e.domain }}" data-environment="{{ e.environment }}"><td>{{ e.domain }}</td><td>{{ e.environment }}</td><td>{{ fmt_time(e.at) }}</td>
<td colspan="5"><span class="badge ok">no drift</span> <span class="small muted">{{ (e.details.targets or {}) | length }} target(s) match the snapshot of their last successful run</span></td></tr>
{% else %}{% for d in diffs %}
<tr data-domain="{{ e.domain }}" data-environment="{{ e.environment }}" class="drift-row"><td>{{ e.domain }}</td><td>{{ e.environment }}</td><td>{{ fmt_time(e.at) }}</td>
<td>{{ d.region }}</td><td>{{ d.technology }}</td><td><code>{{ d.object }}</code></td>
<td><span class="badge bad">{{ d.change }}</span> <span class="small">{{ drift_what(d) }}</span></td><td class="small">{{ (d.since or "")[:16] | replace("T", " ") }}</td></tr>
{% endfor %}{% if e.details.count > diffs | length %}<tr><td colspan="8" class="small muted">… {{ e.details.count - diffs | length }} more in the event's details (export JSON)</td></tr>{% endif %}{% endif %}
{% endfor %}
</table>{% endif %}

<h2 id="compliance-head">Compliance</h2>
{% set c = compliance %}
{% if not c.regulations and not c.violations %}<p class="muted" id="compliance-empty">No regulated change and no violation in this scope (docs/governance.md).</p>{% endif %}
{% if c.regulations %}<table id="regulated"><tr><th>Regulation</th><th>Domain</th><th>Where</th><th>Change</th><th>Approved by</th><th>Compliance sign-off</th></tr>
{% for regulation, changes in c.regulations.items() %}{% for x in changes %}
<tr data-regulation="{{ regulation }}"><td>{{ regulation }}</td><td>{{ x.domain }}</td><td>{{ x.environment }} / {{ x.region }}</td>
<td>{{ x.action }} <code>{{ x.object }}</code> ({{ x.kind }}) <span class="small muted">{{ x.outcome }}</span></td>
<td>{{ x.approved_by | join(", ") or "–" }}</td><td>{{ x.signed_off_by | join(", ") or "none recorded" }}</td></tr>
{% endfor %}{% endfor %}</table>{% endif %}
{% if c.violations %}<table id="violations"><tr><th>Violation</th><th>Domain</th><th>Where</th><th>Detail</th></tr>
{% for v in c.violations %}<tr><td><span class="badge bad">{{ v.what }}</span></td><td>{{ v.domain }}</td><td>{{ [v.environment, v.region] | select | join(" / ") }}</td>
<td class="small">{% if v.rule %}rule {{ v.rule }}: {{ v.label }} in {{ v.script }}{% else %}{{ v.label }}: {{ v.detail }}{% endif %}</td></tr>{% endfor %}
</table>{% endif %}
{% if c.labelled_objects %}<p class="small">Labelled objects per region: {% for where, objects in c.labelled_objects.items() %}<b>{{ where }}</b> {{ objects | length }}{% if not loop.last %}; {% endif %}{% endfor %} (the exports list each).</p>{% endif %}

<h2>Rehearsal trend</h2>
{% if not trends %}<p class="muted" id="trend-empty">No approval has shown a rehearsal estimate yet{% if filters.domain or filters.environment %} for this scope{% endif %} (environments with <code>promotion_from</code> or <code>rehearsal_from</code> record one with each approval request).</p>{% else %}
{% for t in trends %}
<h3 class="trend-head" data-domain="{{ t.domain }}" data-environment="{{ t.environment }}">{{ t.domain }} in {{ t.environment }}: estimate from {{ t.rehearsal }}</h3>
<p class="small">Shown to the approvers at {{ fmt_time(t.at) }}{% if t.run_id %} ({{ t.run_id }}){% endif %}:
{% for region, est in t.regions.items() %}{{ region }} <span class="estimate">{{ seconds(est.get("seconds")) }}</span>{% if est.never_rehearsed %} ({{ est.never_rehearsed | length }} of {{ est.files }} file(s) never rehearsed){% endif %}{% if not loop.last %}; {% endif %}{% endfor %}</p>
{% if not t.files %}<p class="muted trend-none" data-domain="{{ t.domain }}" data-environment="{{ t.environment }}">No trend yet: no file of {{ t.domain }} has run in {{ t.rehearsal }} since the audit store started recording (the nightly rehearsal adds one row per file).</p>{% else %}
<table class="trend" data-domain="{{ t.domain }}" data-environment="{{ t.environment }}">
<tr><th>Technology</th><th>File</th><th>Last runs in {{ t.rehearsal }} (oldest → newest)</th><th>Estimate (slowest)</th><th>Latest in {{ t.environment }}</th></tr>
{% for f in t.files %}
<tr data-script="{{ f.script }}"><td>{{ f.technology }}</td><td><code>{{ f.script }}</code></td>
<td class="runs">{{ f.runs_ms | map("fmt_ms") | join(" · ") }}{% if f.changed %} <span class="small muted">(the file changed: the estimate uses its newest version)</span>{% endif %}{% if f.regions | length > 1 %} <span class="small muted">{{ f.regions | join(", ") }}</span>{% endif %}</td>
<td>{{ fmt_ms(f.estimate_ms) if f.estimate_ms is not none else "–" }}</td>
<td>{{ fmt_ms(f.production_ms) if f.production_ms is not none else "not yet" }}</td></tr>
{% endfor %}
</table>{% endif %}
{% endfor %}{% endif %}

<h2>History</h2>
<form class="filters" method="get" action="{{ base }}">
<label>From<input type="date" name="from" value="{{ filters.from }}"></label>
<label>To<input type="date" name="to" value="{{ filters.to }}"></label>
<label>Domain<input name="domain" value="{{ filters.domain }}" placeholder="any"></label>
<label>Environment<input name="environment" value="{{ filters.environment }}" placeholder="any"></label>
<label>Region<input name="region" value="{{ filters.region }}" placeholder="any"></label>
<label>Event<select name="kind"><option value="">any</option>{% for k in kinds %}<option{% if k == filters.kind %} selected{% endif %}>{{ k }}</option>{% endfor %}</select></label>
<button type="submit">Apply</button>
</form>
<p class="exports">Export this selection:
<a id="export-csv" href="{{ base }}export?{{ qs(filters, format='csv') }}" download>CSV</a>
<a id="export-json" href="{{ base }}export?{{ qs(filters, format='json') }}" download>JSON</a>
<a id="export-html" href="{{ base }}export?{{ qs(filters, format='html') }}" download>HTML report</a></p>
{{ chart | safe }}
{% if not history %}<p class="muted">No events in this selection.</p>{% else %}
<p class="small muted">{{ history | length }} event(s){% if history | length >= limit %}, the latest {{ limit }} shown: narrow the filters or export for all{% endif %}.</p>
<table id="history">
<tr><th>#</th><th>When (UTC)</th><th>Event</th><th>Domain</th><th>Environment</th><th>Region</th><th>Technology</th><th>Change</th><th>Who</th><th>Duration</th><th>Run</th></tr>
{% for rec in history | reverse %}{% set e = rec.event %}
<tr><td class="small">{{ rec.id }}</td><td>{{ fmt_time(e.at) }}</td><td>{{ e.kind }}</td><td>{{ e.domain }}</td><td>{{ e.environment }}</td>
<td>{{ e.region or "" }}</td><td>{{ e.technology or "" }}</td><td>{{ e.script or e.version or "" }}{% if e.details.phase %}<div class="small">phase: {{ e.details.phase }}</div>{% endif %}{% if e.details.datasets %}<div class="small datasets">changed: {% for d in e.details.datasets %}{{ d.kind }} <code>{{ d.name }}</code> ({{ d.action }}){% if not loop.last %}, {% endif %}{% endfor %}</div>{% endif %}{% if e.details.error %}<div class="small">{{ e.details.error }}</div>{% endif %}{% if e.kind in ("verified", "verify_failed") and e.details.checks %}{% set bad = e.details.checks | rejectattr("ok") | list %}<div class="small checks">{% if bad %}{% for c in bad %}<div><span class="badge {{ 'bad' if e.kind == 'verify_failed' else 'wait' }}">{{ c.technology }} {{ c.name }}</span> {{ c.detail }}</div>{% endfor %}{% else %}{{ e.details.checks | length }} check(s) passed: {{ e.details.checks | map(attribute="name") | unique | join(", ") }}{% endif %}</div>{% endif %}
{% if e.kind == "drift" %}<div class="small">{{ e.details.count or 0 }} difference(s){% for d in (e.details.differences or [])[:3] %}; {{ d.region }}/{{ d.technology }} {{ d.object }} {{ d.change }}{% endfor %}</div>{% endif %}
{% if e.kind == "snapshot" %}<div class="small muted">baseline for drift ({{ e.details.source }})</div>{% endif %}
{% if e.kind in ("overridden", "refused") and e.details.reason %}<div class="small">{{ e.details.gate ~ ": " if e.details.gate else "" }}{{ e.details.reason }}</div>{% endif %}</td>
<td>{{ (e.details.by or e.actor) | person }}</td><td>{{ fmt_ms(e.duration_ms) if e.duration_ms is not none else "" }}</td>
<td>{% set link = event_link(e) %}{% if link %}<a href="{{ link }}" target="_top" class="small">{{ e.run_id }}</a>{% else %}<span class="small">{{ e.run_id or "" }}</span>{% endif %}</td></tr>
{% endfor %}
</table>{% endif %}
</body></html>
""")

_UNAVAILABLE = _env.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polymigrate · audit unavailable</title><style>{{ styles }}</style></head>
<body><h1>The audit store is not available</h1>
<p id="problem">{{ problem }}</p>
<p>The page reads the PostgreSQL connection <code>{{ conn_id }}</code>. Add it under Admin → Connections
(type postgres), or set <code>{{ env }}</code> for the API server, then run
<code>polymigrate audit init</code> once as the schema owner.</p></body></html>
""")


def drift_what(d: dict[str, Any]) -> str:
    """A difference as one line: what it was and what it is."""
    from polymigrate.snapshot_diff import short

    if d.get("change") == "added":
        return short(d.get("after"))
    if d.get("change") == "removed":
        return "was " + short(d.get("before"))
    return f"{short(d.get('before'))} → {short(d.get('after'))}"


_env.globals["drift_what"] = drift_what
_env.filters["fmt_ms"] = fmt_ms


def seconds(value: float | None) -> str:
    return "no estimate" if value is None else "~" + fmt_ms(int(value * 1000))


_env.globals["seconds"] = seconds


def render_page(*, filters: dict[str, str], technologies: list[str], rows: list[Any], history: list[Any],
                chart: str, limit: int, base: str = "", drift: list[Any] = (), trends: list[Any] = (),
                runs: list[Any] = ()) -> str:
    """The whole page; ``base`` is the mount path ending in '/', so links work with or without it.
    ``drift``: the newest drift report of each (domain, environment) in scope; ``trends``: the
    rehearsal trend behind each (domain, environment)'s latest approval estimate (``audit.trend``);
    ``runs``: the run summaries to list, newest first (a failed one with its error)."""
    return _PAGE.render(styles=PAGE_STYLES, conn_id=AUDIT_CONN_ID, filters=filters, technologies=technologies,
                        rows=rows, history=history, chart=chart, limit=limit, base=base, kinds=KINDS, qs=_qs,
                        fmt_ms=fmt_ms, fmt_time=fmt_time, drift=list(drift), trends=list(trends),
                        runs=list(runs), compliance=compliance(history, list(runs)))


def render_unavailable(problem: str) -> str:
    return _UNAVAILABLE.render(styles=PAGE_STYLES, problem=problem, conn_id=AUDIT_CONN_ID, env=env_var(AUDIT_CONN_ID))
