"""The audit history the audit page's tests read (unit, integration and e2e alike), in a module of its
own so no test module imports another for it: events as the sample domains' DAG runs record them,
two runs shaped exactly as the operators record them (a scheduled staging run, an overridden
production run), and a reader of everything for tests of the views.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

from polymigrate.audit import PostgresAuditStore
from polymigrate.catalog import Kind
from polymigrate.commands import validate_project
from polymigrate.events import AuditEvent

SPECS = Path(__file__).resolve().parents[1] / "migration_specs"
BASE_URL = "http://airflow.test:8080"

T0 = datetime(2026, 11, 30, 2, 0, tzinfo=timezone.utc)
OLD_BASE = "http://127.0.0.1:41111"  # the demo's port when the events were written


def scheduled_staging_run(run_id: str = "scheduled__2026-11-30T02:00:00+00:00", *, apply: bool = True,
                          domain: str = "common") -> list[AuditEvent]:
    """A nightly rehearsal as the operators emit it: no triggering user, run_type an enum's str()."""
    clock = iter(T0 + timedelta(seconds=n) for n in range(1000))
    dag = f"migrate__{domain}__staging"
    base = dict(domain=domain, environment="staging", run_id=run_id, dag_id=dag, actor="DagRunType.SCHEDULED@airflow",
                details={"run_url": f"{OLD_BASE}/dags/{dag}/runs/{run_id}"})

    def ev(kind, **kw):
        details = {**base["details"], **kw.pop("details", {})}
        return AuditEvent(kind=kind, at=next(clock), details=details, **{k: v for k, v in base.items() if k != "details"}, **kw)

    out = [ev("triggered", task_id="validate", details={"by": None, "run_type": "DagRunType.SCHEDULED", "params": {}}),
           ev("validated", task_id="validate"),
           ev("approved", task_id="approve", details={"automatic": True, "reason": "approvals.required: 0", "by": "policy"}),
           ev("planned", task_id="plan", details={"hash": "ab" * 32, "pending": 3 if apply else 0, "problems": 0,
                                                  "targets": {"western_europe/postgresql": 3 if apply else 0,
                                                              "north_africa/postgresql": 0}})]
    if apply:
        for v, script in (("1", "V1__create_money_types.sql"), ("2", "V2__create_app_role.sql"),
                          ("2.1", "V2.1__create_countries.sql")):
            kw = dict(region="western_europe", technology="postgresql", version=v, script=script, task_id="western_europe.postgresql")
            out += [ev("migration_started", **kw), ev("migration_succeeded", duration_ms=120, **kw)]
    for region in ("western_europe", "north_africa"):
        out.append(ev("verified", region=region, task_id=f"{region}.verify",
                      details={"region": region, "versions": {"postgresql": "2.1"}}))
    return out


def overridden_production_run() -> list[AuditEvent]:
    """An emergency override: the approve task and the plan's promotion gate each record who approved it."""
    run_id = "manual__2026-11-30T03:00:00+00:00"
    base = dict(domain="common", environment="production", run_id=run_id, dag_id="migrate__common__production",
                actor="admin@airflow")
    at = T0 + timedelta(hours=1)
    return [
        AuditEvent("triggered", at=at, details={"by": "admin", "run_type": "DagRunType.MANUAL"}, **base),
        AuditEvent("approved", at=at, details={"by": "ann", "counted": True}, **base),
        AuditEvent("approved", at=at, details={"by": "cid", "counted": True}, **base),
        AuditEvent("approved", at=at, details={"by": "admin", "counted": False}, **base),
        AuditEvent("overridden", at=at, details={"by": "ann, cid, bob", "approved_by": ["ann", "cid", "bob"],
                                                 "reason": "INC-4242 hotfix"}, **base),
        AuditEvent("overridden", at=at, details={"by": "ann, cid, bob", "gate": "promotion", "reason": "INC-4242 hotfix",
                                                 "missing": ["postgresql 2.1 V2.1__create_countries.sql"]}, **base),
    ]


def seed_sample_history(store: PostgresAuditStore, *, now: datetime | None = None) -> dict:
    """Events as the DAGs would record them for the sample domains of migration_specs/.

    Staging: one run per domain applying everything except the last migration of each technology
    in the last region (left pending). Production: one run of the first domain deployed to two
    regions or more, failing in its second region. Returns what the matrix must show.
    """
    now = now or datetime.now(timezone.utc).replace(microsecond=0)
    v = validate_project(SPECS)
    expected: dict = {"domains": [], "pending": {}, "failed": None}
    clock = [now - timedelta(days=3)]

    def at() -> datetime:
        clock[0] += timedelta(seconds=37)
        return clock[0]

    def run(domain: str, env_name: str, triggerer: str, approvers: list[str], fail_in: str | None = None,
            hold_back_in: str | None = None) -> None:
        env = v.project.environments[env_name]
        project_domain = v.project.domains[domain]
        run_id = f"manual__{clock[0].isoformat()}"
        common = dict(domain=domain, environment=env_name, run_id=run_id, dag_id=f"migrate__{domain}__{env_name}",
                      details={"run_url": f"{BASE_URL}/dags/migrate__{domain}__{env_name}/runs/{run_id}"})

        def emit(kind: str, actor: str = f"{triggerer}@airflow", **kw) -> None:
            details = {**common["details"], **kw.pop("details", {})}
            store.emit(AuditEvent(kind=kind, actor=actor, at=at(), details=details,
                                  **{k: c for k, c in common.items() if k != "details"}, **kw))

        regions = [r.name for r in v.project.regions_of(project_domain, env)]
        techs = project_domain.technology_order()
        migrations = {t: [m for m in v.catalogs[domain].migrations.get(t, []) if m.kind is Kind.VERSIONED] for t in techs}
        emit("triggered")
        if env.policy.rehearsal:  # what the approvers were shown (the page's rehearsal trend starts from it)
            emit("approval_requested", details={"changeset_hash": "ab" * 32, "rehearsal": {
                "environment": env.policy.rehearsal, "regions": {r.name: {"seconds": 12.5, "files": 3, "never_rehearsed": []}
                                                                 for r in v.project.regions_of(project_domain, env)}}})
            expected["trend"] = (domain, env_name)
        for who in approvers:
            emit("approved", details={"by": who})
        emit("planned", details={"hash": "ab" * 32, "targets": {f"{r}/{t}": len(migrations[t]) for r in regions for t in techs}})
        for region in regions:
            for tech in techs:
                todo = migrations[tech][:-1] if region == hold_back_in and migrations[tech] else migrations[tech]
                for n, m in enumerate(todo):
                    kw = dict(region=region, technology=tech, version=m.version, script=m.script, checksum=m.checksum)
                    emit("migration_started", **kw)
                    ms = 200 + zlib.crc32(f"{region}{m.script}".encode()) % 5000
                    if region == fail_in and n == len(todo) - 1:
                        emit("migration_failed", duration_ms=ms, details={"error": "lock timeout on table orders"}, **kw)
                        return
                    emit("migration_succeeded", duration_ms=ms, **kw)
                if region == hold_back_in and migrations[tech]:
                    expected["pending"][(domain, env_name, region, tech)] = 1
            emit("verified", region=region, details={"region": region})

    domains = sorted(v.good_domains())
    for domain in domains:
        staging_regions = [r.name for r in v.project.regions_of(v.project.domains[domain], v.project.environments["staging"])]
        run(domain, "staging", "carol", ["dave"], hold_back_in=staging_regions[-1])
    prod = v.project.environments["production"]
    first, prod_regions = next((d, regions) for d in domains
                               if len(regions := [r.name for r in v.project.regions_of(v.project.domains[d], prod)]) > 1)
    run(first, "production", "carol", ["dave", "erin"], fail_in=prod_regions[1])
    expected.update(domains=domains, failed=(first, "production", prod_regions[1]))
    return expected


def reads_everything():
    """A ``get_access`` override for tests of the views: a reader of every pair in the test's store."""
    from fastapi import Depends

    from polymigrate_airflow.ui.app import Access, get_store

    def access(store=Depends(get_store)) -> Access:
        return Access("test", frozenset(store.scopes()))
    return access
