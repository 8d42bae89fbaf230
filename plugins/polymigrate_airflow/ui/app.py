"""The audit page served inside Airflow's API server: state matrix, filtered history, export.

Mounted by the plugin under ``/polymigrate``; every route requires an authenticated Airflow user,
and answers for the (domain, environment) pairs whose DAG Airflow's auth manager lets that user read
(``Access``): a FAB or Keycloak deployment's per-DAG rules hold here as in the rest of the UI.
The audit store is reached through the ``polymigrate_audit`` Airflow connection, resolved per
request (never at import, so the API server starts even when the store is down or unconfigured).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Iterator

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow.api_fastapi.core_api.security import GetUserDep, requires_authenticated
from polymigrate.audit import AUDIT_CONN_ID, PostgresAuditStore
from polymigrate.audit.history import summarize_runs
from polymigrate.audit.matrix import MATRIX_KINDS, build_matrix
from polymigrate.audit.report import FORMATS, MEDIA_TYPES, duration_chart_svg, render, select
from polymigrate.blueprint import dag_id
from polymigrate.errors import PolymigrateError
from polymigrate_airflow.ui.page import render_page, render_unavailable

SIGN_IN_HINT = ("not signed in to Airflow: this page uses your Airflow session. Open the Airflow UI, sign in, "
                "then Browse → Migration audit (scripts: send 'Authorization: Bearer <token>' from POST /auth/token)")
HISTORY_LIMIT = 500
DRIFT_REPORTS_READ = 200  # newest drift events read to find each (domain, environment)'s latest
APPROVAL_REQUESTS_READ = 200  # newest approval requests read to find each one's latest estimate
TREND_EVENTS_READ = 2000  # newest migration_succeeded events read per (domain, environment) for the trend
DEFAULT_DAYS = 30
RUNS_SHOWN = 25  # the page's recent runs; the exports have them all


class StoreUnavailable(Exception):
    """The audit store is not configured or not reachable; the page says how to fix it."""


def get_store() -> Iterator[PostgresAuditStore]:
    """The audit store of this request, through the ``polymigrate_audit`` connection."""
    from polymigrate_airflow.connections import build_client

    try:
        # the page only reads: a read-only session, as the reader role when the login has it
        store = PostgresAuditStore(build_client("postgresql", AUDIT_CONN_ID), read_only=True)
    except PolymigrateError as exc:
        raise StoreUnavailable(str(exc)) from exc
    try:
        yield store
    finally:
        store.close()


@dataclass(frozen=True)
class Access:
    """What one user may read: the (domain, environment) pairs whose migration DAG
    (``migrate__<domain>__<environment>``) the auth manager lets them read (GET). Runs of the command
    line and nightly drift reports are under the same pair, so they follow the same DAG's access."""

    user: str
    readable: frozenset[tuple[str, str]]
    auth_manager: str = "the auth manager"


class NotAllowed(Exception):
    """A run the user may not read: 403, saying which DAG and how to get access."""


def get_access(user: GetUserDep, store: PostgresAuditStore = Depends(get_store)) -> Access:
    """Ask Airflow's auth manager, once per request, which of the store's pairs this user may read."""
    from airflow.api_fastapi.app import get_auth_manager

    scopes = _guard(store, store.scopes)
    manager = get_auth_manager()
    dags = {dag_id(d, e): (d, e) for d, e in scopes}
    allowed = manager.filter_authorized_dag_ids(dag_ids=set(dags), user=user, method="GET")
    return Access(user.get_name(), frozenset(dags[d] for d in allowed if d in dags), type(manager).__name__)


class ScopedStore:
    """The store as one reader sees it: every query limited to the pairs they may read."""

    def __init__(self, store: PostgresAuditStore, access: Access):
        self._store, self.access = store, access

    def query(self, *args: Any, **kwargs: Any):
        # Always in the query, even for a reader of everything: a pair whose first event lands after
        # get_access asked stays hidden until the next request asks about it.
        return self._store.query(*args, **kwargs, scopes=self.access.readable)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def readable_store(store: PostgresAuditStore = Depends(get_store), access: Access = Depends(get_access)) -> ScopedStore:
    return ScopedStore(store, access)


class Filters:
    """The query string of every view: period and scope; blank fields mean 'any'."""

    def __init__(self, from_: str | None = Query(None, alias="from"), to: str | None = Query(None),
                 domain: str | None = Query(None), environment: str | None = Query(None),
                 region: str | None = Query(None), kind: str | None = Query(None)):
        today = datetime.now(timezone.utc).date()
        self.from_ = _parse_day(from_) or today - timedelta(days=DEFAULT_DAYS)
        self.to = _parse_day(to) or today
        self.domain, self.environment, self.region, self.kind = (v or None for v in (domain, environment, region, kind))

    def query_kwargs(self) -> dict[str, Any]:
        # 'to' is a day: include all of it.
        return {"from_": self.from_, "to": self.to + timedelta(days=1), "domain": self.domain,
                "environment": self.environment, "region": self.region, "kind": self.kind}

    def as_dict(self) -> dict[str, str]:
        return {"from": self.from_.isoformat(), "to": self.to.isoformat(), "domain": self.domain or "",
                "environment": self.environment or "", "region": self.region or "", "kind": self.kind or ""}


def _parse_day(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _history(store: PostgresAuditStore, filters: Filters):
    return _guard(store, lambda: store.query(**filters.query_kwargs(), limit=HISTORY_LIMIT, newest_first=True))


def _matrix(store: PostgresAuditStore, filters: Filters):
    # The matrix is the state now, so it ignores the period and reads every state-changing event.
    return build_matrix(_guard(store, lambda: store.query(domain=filters.domain, environment=filters.environment,
                                                          region=filters.region, kind=MATRIX_KINDS)))


def _drift(store: PostgresAuditStore, filters: Filters):
    """The newest drift report of each (domain, environment) in scope: drift is a state, not a period."""
    found = _guard(store, lambda: store.query(domain=filters.domain, environment=filters.environment, kind="drift",
                                              limit=DRIFT_REPORTS_READ, newest_first=True))
    latest = {}
    for rec in reversed(found):
        latest.setdefault((rec.event.domain, rec.event.environment), rec)
    return sorted(latest.values(), key=lambda r: (r.event.domain, r.event.environment))


def _trends(store: PostgresAuditStore, filters: Filters):
    """Per (domain, environment) whose approvals showed a rehearsal estimate: the newest estimate and
    each file's last runs in the rehearsal environment, with its latest run where it was approved."""
    from polymigrate.audit.trend import latest_estimates, rehearsal_trend

    requests = _guard(store, lambda: store.query(domain=filters.domain, environment=filters.environment,
                                                 kind="approval_requested", limit=APPROVAL_REQUESTS_READ,
                                                 newest_first=True))
    out = []
    for req in latest_estimates(requests):
        e = req.event
        runs = []
        for env in (e.details["rehearsal"]["environment"], e.environment):
            runs += _guard(store, lambda env=env: store.query(domain=e.domain, environment=env, kind="migration_succeeded",
                                                              limit=TREND_EVENTS_READ, newest_first=True))
        out.append(rehearsal_trend(req, runs))
    return out


def _guard(store: PostgresAuditStore, read):
    import psycopg

    try:
        return read()
    except psycopg.errors.UndefinedTable as exc:
        raise StoreUnavailable(f"the audit store {store.target} has not been initialised (no "
                               f"polymigrate_audit.events table)") from exc
    except Exception as exc:  # unreachable server, missing privileges
        raise StoreUnavailable(f"cannot read the audit store {store.target}: {exc}") from exc


def create_app() -> FastAPI:
    """The FastAPI sub-application (one per API server process)."""
    app = FastAPI(title="polymigrate audit", dependencies=[Depends(requires_authenticated())],
                  docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    def denied(request, exc: StarletteHTTPException) -> Response:
        """Airflow's bare "Not authenticated" / "Forbidden", said with why and what to do."""
        headers = getattr(exc, "headers", None)
        if exc.status_code not in (401, 403):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)
        hint = (SIGN_IN_HINT if exc.status_code == 401 else
                "your Airflow user is signed in but may not read this page; ask an Airflow admin for access")
        if _wants_json(request):
            return JSONResponse({"detail": exc.detail, "hint": hint}, status_code=exc.status_code, headers=headers)
        return HTMLResponse(f"<!doctype html><title>Migration audit: access denied</title><h1>Access denied</h1>"
                            f"<p>{html.escape(hint)}</p>", status_code=exc.status_code, headers=headers)

    @app.exception_handler(NotAllowed)
    def not_allowed(request, exc: NotAllowed) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": "Forbidden", "reason": str(exc)}, status_code=403)
        return HTMLResponse(f"<!doctype html><title>Migration audit: access denied</title><h1>Access denied</h1>"
                            f"<p>{html.escape(str(exc))}</p>", status_code=403)

    @app.exception_handler(StoreUnavailable)
    def unavailable(request, exc: StoreUnavailable) -> Response:
        if "/api/" in request.url.path:
            return JSONResponse({"error": str(exc), "connection": AUDIT_CONN_ID}, status_code=503)
        return HTMLResponse(render_unavailable(str(exc)), status_code=503)

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, filters: Filters = Depends(), store: ScopedStore = Depends(readable_store)) -> str:
        history = _history(store, filters)
        technologies, rows = _matrix(store, filters)
        runs = summarize_runs(history)
        return render_page(filters=filters.as_dict(), technologies=technologies, rows=rows, history=history,
                           chart=duration_chart_svg(runs), limit=HISTORY_LIMIT, drift=_drift(store, filters),
                           trends=_trends(store, filters), runs=list(reversed(runs))[:RUNS_SHOWN],
                           base=request.scope.get("root_path", "").rstrip("/") + "/")

    @app.get("/export")
    def export(filters: Filters = Depends(), format: str = Query("csv"),
               store: ScopedStore = Depends(readable_store)) -> Response:
        if format not in FORMATS:
            return JSONResponse({"error": f"format must be one of {', '.join(FORMATS)}"}, status_code=400)
        records, runs = _guard(store, lambda: select(store, **filters.query_kwargs()))
        body = render(records, format, filters=filters.as_dict(), runs=runs)
        name = f"polymigrate-audit-{filters.from_.isoformat()}-to-{filters.to.isoformat()}.{format}"
        return Response(body, media_type=MEDIA_TYPES[format],
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @app.get("/api/matrix")
    def matrix(filters: Filters = Depends(), store: ScopedStore = Depends(readable_store)) -> dict:
        technologies, rows = _matrix(store, filters)
        return {"technologies": technologies, "rows": [r.to_dict() for r in rows]}

    @app.get("/api/history")
    def history(filters: Filters = Depends(), store: ScopedStore = Depends(readable_store)) -> dict:
        records = _history(store, filters)
        return {"filters": filters.as_dict(), "limit": HISTORY_LIMIT,
                "events": [{"id": r.id, "hash": r.hash, **r.event.to_dict()} for r in records]}

    def run_records(run_id: str, dag: str | None, store: PostgresAuditStore, access: Access):
        # Run ids are unique per DAG only (two DAGs triggered in the same second share one): ?dag_id= picks.
        records = [r for r in _guard(store, lambda: store.query(run_id=run_id))
                   if not dag or dag_id(r.event.domain, r.event.environment) == dag]
        if not records:
            raise StarletteHTTPException(404, f"no run {run_id!r}{f' of {dag}' if dag else ''} in the audit store")
        denied = sorted({(r.event.domain, r.event.environment) for r in records} - access.readable)
        if denied:
            dags = ", ".join(dag_id(d, e) for d, e in denied)
            raise NotAllowed(f"Airflow user {access.user!r} may not read DAG {dags} ({access.auth_manager} refused "
                             f"read access to it), so run {run_id!r} is not shown. Ask an Airflow admin for a role "
                             f"that can read {dags}, or the compliance role (read on all DAGs); see docs/audit.md.")
        return records

    @app.get("/runs/{run_id:path}", response_class=HTMLResponse)
    def run_detail(run_id: str, dag: str | None = Query(None, alias="dag_id"),
                   store: PostgresAuditStore = Depends(get_store), access: Access = Depends(get_access)) -> str:
        records = run_records(run_id, dag, store, access)
        return render(records, "html", filters={"run_id": run_id}, runs=summarize_runs(records))

    @app.get("/api/runs/{run_id:path}")
    def run_detail_json(run_id: str, dag: str | None = Query(None, alias="dag_id"),
                        store: PostgresAuditStore = Depends(get_store), access: Access = Depends(get_access)) -> Response:
        records = run_records(run_id, dag, store, access)
        return Response(render(records, "json", filters={"run_id": run_id}, runs=summarize_runs(records)),
                        media_type=MEDIA_TYPES["json"])

    return app


def _wants_json(request: Request) -> bool:
    path = request.url.path.rstrip("/")
    return "/api/" in path or path.endswith("/export")
