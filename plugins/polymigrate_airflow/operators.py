"""The operators of a polymigrate DAG: thin shells that resolve connections and call the core.

Every operator shares ``PolymigrateMixin``: loading the domain, the run's params, the
``RunContext``, the audit sink, and the mapping of errors onto Airflow's retry semantics
(``TransientError`` → an ordinary failure that burns a retry with backoff; any other polymigrate
error → ``AirflowFailException``, failing at once with the file, statement and fix).

Constructors only store strings, so parsing a DAG file never loads a migration or a connection;
the core modules are imported inside ``execute``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

AUDIT_CONN_ID = "polymigrate_audit"
AUDIT_REQUIRED_IN = ("staging", "production")  # fail before touching targets when the store is unreachable
XCOM_VERSIONS_CAP = 50  # keep execute XComs small even for a 500-migration first run
MIN_OVERRIDE_REASON = 10  # "x" is not a reason an auditor can follow up
SUPPRESSIONS_CAP = 50


@dataclass(frozen=True)
class RunParams:
    dry_run: bool
    target_version: str | None
    regions: list[str] | None  # None: every region
    allow_out_of_order: bool
    technologies: list[str] | None = None  # None: every technology of the domain
    override: bool = False  # emergency override: stricter approval, promotion gate bypassed, recorded
    override_reason: str | None = None

    @classmethod
    def from_context(cls, context) -> "RunParams":
        p = context.get("params") or {}
        regions = p.get("regions")
        target = (p.get("target_version") or "").strip() or None
        if target:
            from polymigrate.versions import Version
            try:
                Version(target)
            except ValueError as exc:
                raise AirflowFailException(f"param target_version: {exc}") from None
        techs = p.get("technologies")
        override = bool(p.get("emergency_override"))
        reason = (p.get("emergency_reason") or "").strip() or None
        if override and (reason is None or len(reason) < MIN_OVERRIDE_REASON):
            raise AirflowFailException("param emergency_override needs emergency_reason: say why (at least "
                                       f"{MIN_OVERRIDE_REASON} characters, e.g. the incident id); it is recorded "
                                       "in the audit trail and shown to the approvers")
        for name, value in (("regions", regions), ("technologies", techs)):
            if value is not None and len(value) == 0:  # "none selected" must never widen to "all"
                raise AirflowFailException(f"param {name} is empty: select at least one (or leave the default: all)")
        return cls(bool(p.get("dry_run")), target, None if regions is None else list(regions),
                   bool(p.get("allow_out_of_order")), None if techs is None else list(techs), override, reason)

    def selects(self, region: str, technology: str | None = None) -> bool:
        return (self.regions is None or region in self.regions) and \
            (technology is None or self.technologies is None or technology in self.technologies)


class PolymigrateMixin:
    """Shared by every polymigrate operator (including the HITL-based approve task)."""

    specs_root: str
    domain: str
    environment: str

    # --- loading ----------------------------------------------------------------------------
    def load_environment(self):
        """(project, environment); SpecError naming the environment file's problems otherwise."""
        from polymigrate.errors import Problem, SpecError
        from polymigrate.spec import load_project

        project = load_project(self.specs_root)
        env = project.environments.get(self.environment)
        if env is None:
            problems = [p for p in project.problems if "environments" in p.file] or [
                Problem(self.specs_root, f"environment '{self.environment}' is not defined",
                        hint=f"add environments/{self.environment}.yaml")]
            raise SpecError(problems)
        return project, env

    def load(self):
        """(project, domain, catalog, environment) of this task; SpecError listing every problem."""
        from polymigrate.commands import load_domain

        project, domain, catalog = load_domain(self.specs_root, self.domain)
        _, env = self.load_environment()
        return project, domain, catalog, env

    # --- approval binding -------------------------------------------------------------------
    def check_binding(self, context, domain, catalog, env) -> str:
        """Refuse unless the files (and placeholders) are exactly what the approve task approved."""
        from polymigrate.errors import PolicyRefused
        from polymigrate.policy import bound_changeset_hash

        approved = context["ti"].xcom_pull(task_ids="approve") or {}
        bound = approved.get("changeset_hash")
        current = bound_changeset_hash(domain.name, env, all_migrations(domain, catalog))
        if not bound:
            raise PolicyRefused("no approval recorded in this run (the approve task pushed no change-set hash)",
                                hint="clear the approve task so the change set is approved again")
        if current != bound:
            self.emit(context, "refused", details={"reason": "the change set changed after approval",
                                                   "changeset_hash": bound, "current_hash": current})
            raise PolicyRefused(f"the change set changed after approval (approved {bound[:12]}, files now "
                                f"{current[:12]}); trigger a new run to approve it again")
        self.check_recorded_approval(context, env, approved, bound)
        return current

    def check_recorded_approval(self, context, env, approved: dict, changeset_hash: str) -> None:
        """Where people must approve, the approval must be on record in the audit store, not only in
        the approve task's XCom (which a user allowed to edit task state and XComs could forge), and
        still valid now (expiry, roles, no rejection) when this task runs, possibly hours later."""
        from polymigrate.errors import PolicyRefused
        from polymigrate_airflow.approval import change_set, decide, recorded_answers

        params = RunParams.from_context(context)
        if env.policy.approvals.required == 0 and not params.override:
            return
        sink = self.sink(env)
        if getattr(sink, "query", None) is None:
            self.log.warning("no audit store to confirm the approval against; trusting the approve task's result")
            return
        summary = context["ti"].xcom_pull(task_ids="validate") or {}
        run = context.get("dag_run")
        change = change_set(self.domain, env.name, changeset_hash,
                            getattr(run, "triggering_user_name", None) or "unknown", summary)
        approvals, rejections = recorded_answers(sink, self.domain, env.name, context.get("run_id"), changeset_hash)
        decision = decide(self.specs_root, env, change, approvals + rejections, params.override)
        if decision.status != "approved":
            self.emit(context, "refused", details={"reason": "no valid approval on record",
                                                   "changeset_hash": changeset_hash, "decision": decision.to_dict()})
            raise PolicyRefused(f"no valid approval on record for change set {changeset_hash[:12]} in this run: "
                                + "; ".join(decision.reasons + decision.ignored),
                                hint="clear the approve task so the change set is approved again")

    # --- run context ------------------------------------------------------------------------
    @staticmethod
    def actor(context) -> str:
        run = context.get("dag_run")
        user = getattr(run, "triggering_user_name", None)
        run_type = getattr(run, "run_type", None) or "unknown"
        return f"{user}@airflow" if user else f"{getattr(run_type, 'value', run_type)}@airflow"  # scheduled@airflow

    def run_context(self, context, env, region: str, plan_hash: str | None = None):
        from polymigrate.ledger import RunContext

        ti = context["ti"]
        reg = env.regions[region]
        return RunContext(domain=self.domain, environment=env.name, region=region, actor=self.actor(context),
                          run_id=context.get("run_id"), task_id=ti.task_id, try_number=ti.try_number,
                          dag_id=ti.dag_id, plan_hash=plan_hash, placeholders={**env.placeholders, **reg.placeholders},
                          lock_timeout=env.policy.lock_timeout, statement_timeout=env.policy.statement_timeout,
                          lock_wait_seconds=env.policy.lock_wait_seconds)

    # --- audit ------------------------------------------------------------------------------
    def sink(self, env=None):
        """The audit sink for this task, opened once; required in staging/production."""
        if getattr(self, "_sink", None) is None:
            self._sink = open_audit_sink(env.name if env is not None else self.environment)
        return self._sink

    def emit(self, context, kind: str, **kw) -> None:
        from polymigrate.events import AuditEvent

        ti = context.get("ti")
        self.sink().emit(AuditEvent(kind=kind, domain=self.domain, environment=self.environment,
                                    actor=self.actor(context), run_id=context.get("run_id"),
                                    dag_id=getattr(ti, "dag_id", None), task_id=getattr(ti, "task_id", self.task_id),
                                    try_number=getattr(ti, "try_number", None), **kw))

    # --- errors -----------------------------------------------------------------------------
    def guarded(self, context, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn`` mapping polymigrate errors onto Airflow's retry semantics."""
        from polymigrate.errors import PolymigrateError, SpecError, TransientError

        try:
            ti = context.get("ti")
            if ti is not None and (ti.try_number or 1) > 1 and not getattr(self, "_retry_recorded", False):
                # compliance wants every retry of a migration task on record, not only its outcome
                self._retry_recorded = True
                self.emit(context, "task_retried", details={"try_number": ti.try_number,
                                                            "max_tries": getattr(ti, "max_tries", None)})
            return fn(context)
        except TransientError as exc:
            self.log.warning("Transient failure, Airflow will retry with backoff: %s", exc)
            raise
        except SpecError as exc:
            raise AirflowFailException(f"{len(exc.problems)} problem(s) in the specs of '{self.domain}':\n"
                                       + "\n".join(f"  - {p}" for p in exc.problems)) from None
        except PolymigrateError as exc:
            raise AirflowFailException(str(exc)) from None
        finally:
            close = getattr(getattr(self, "_sink", None), "close", None)
            if callable(close):
                close()
            self._sink = None


def open_audit_sink(environment: str):
    """The audit store's sink when ``polymigrate.audit`` exists, else a NullSink.

    Where it is required, an unreachable store fails the task before any target is touched: a
    migration without its audit trail is worse than a migration that waits.
    """
    from polymigrate.events import NullSink

    try:
        from polymigrate.audit import open_sink
    except ImportError:
        return NullSink()
    from polymigrate.errors import PermanentError
    from polymigrate_airflow.connections import build_client

    required = environment in AUDIT_REQUIRED_IN
    try:
        conninfo = build_client("postgresql", AUDIT_CONN_ID)
    except PermanentError:
        if required:
            raise
        conninfo = None
    return open_sink(conninfo, required=required)


class PolymigrateOperator(PolymigrateMixin, BaseOperator):
    """Base of the polymigrate task operators: holds only strings until ``execute``."""

    template_fields = ("domain", "environment")

    def __init__(self, *, specs_root: str, domain: str, environment: str, **kwargs):
        super().__init__(**kwargs)
        self.specs_root, self.domain, self.environment = specs_root, domain, environment

    def execute(self, context):
        return self.guarded(context, self.run)

    def run(self, context) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class ValidateOperator(PolymigrateOperator):
    """Loads the domain, checks its catalog and lint findings; fails with the full list."""

    ui_color = "#d8e8f7"

    def run(self, context):
        from polymigrate.policy import bound_changeset_hash

        params = RunParams.from_context(context)
        run = context.get("dag_run")
        ti = context.get("ti")
        if ti is None or (ti.try_number or 1) == 1:  # first: even a run refused below is on record, with who
            self.emit(context, "triggered", details={"by": getattr(run, "triggering_user_name", None),
                                                     "run_type": str(getattr(getattr(run, "run_type", ""), "value", None) or getattr(run, "run_type", "") or ""),
                                                     "params": asdict(params)})
        project, domain, catalog, env = self.load()
        counts = {tech: len(catalog.applicable(tech)) for tech in domain.technology_order()}
        summary: dict[str, Any] = {"migrations": counts, "risk": None, "destructive": False, "suppressions": [],
                                   "changeset_hash": bound_changeset_hash(domain.name, env, all_migrations(domain, catalog)),
                                   "lint": {"findings": 0, "blocking": 0}}
        report = lint(catalog)
        if report is not None:
            blocking = list(report.blocking(env.policy.lint_block_at))
            risk = report.risk() if callable(report.risk) else report.risk
            summary["risk"] = risk
            summary["destructive"] = bool(getattr(report, "destructive", False))
            summary["destructive_waived"] = summary["destructive"] and not any(
                f.destructive and not f.suppressed for f in getattr(report, "findings", []) or [])
            summary["suppressions"] = list(getattr(report, "suppressions", []) or [])[:SUPPRESSIONS_CAP]
            summary["lint"] = {"findings": len(getattr(report, "findings", []) or []), "blocking": len(blocking)}
            for f in getattr(report, "findings", []) or []:
                self.log.info("lint: %s", f)
            if blocking and params.override:
                self.log.warning("%d blocking lint finding(s) pass to approval under the emergency override "
                                 "(it needs the stricter approval): %s", len(blocking), params.override_reason)
            elif blocking:
                self.emit(context, "refused", details={"reason": f"lint findings at or above {env.policy.lint_block_at}",
                                                       "findings": [str(f) for f in blocking][:SUPPRESSIONS_CAP]})
                raise AirflowFailException(
                    f"{len(blocking)} lint finding(s) at or above '{env.policy.lint_block_at}' block {self.environment}:\n"
                    + "\n".join(f"  - {f}" for f in blocking)
                    + "\n(fix the migration, or waive the finding in the file as the lint docs describe)")
        for note in catalog.notes:
            self.log.info("note: %s", note)
        self.log.info("Valid: %s", ", ".join(f"{t} {n}" for t, n in counts.items()) or "no technology")
        self.emit(context, "validated", details=summary)
        return summary


def all_migrations(domain, catalog) -> list:
    """Every file of the domain the change-set hash covers (undo files too: they are part of what ships)."""
    return [m for tech in domain.technology_order() for m in catalog.migrations.get(tech, [])]


def staging_of(project, env) -> str | None:
    """The rehearsal environment: ``policy.promotion_from``, else one named ``staging``."""
    if env.policy.promotion_from:
        return env.policy.promotion_from
    return "staging" if "staging" in project.environments and env.name != "staging" else None


def promotion_check(project, domain, env, plan, technologies: list[str] | None) -> list[str]:
    """What ``plan`` would apply that has not succeeded in every region of ``promotion_from``."""
    from polymigrate.gates import promotion_gate

    staging = project.environments.get(env.policy.promotion_from or "")
    if staging is None:
        return promotion_gate(plan, project, domain, env, lambda region, tech: None)
    connect, close = _connector(domain, staging, technologies)
    try:
        return promotion_gate(plan, project, domain, env, connect)
    finally:
        close()


def plan_preview(op, project, env, params: "RunParams") -> dict[str, Any]:
    """For the approver: pending migrations per region and technology, and what staging has not run."""
    from polymigrate.commands import load_domain, plan_domain

    _, domain, catalog = load_domain(op.specs_root, op.domain)
    connect, close = _connector(domain, env, params.technologies)
    try:
        plan = plan_domain(project, domain, catalog, env, connect, regions=params.regions,
                           target=params.target_version, out_of_order=params.allow_out_of_order)
    finally:
        close()
    plan.targets = [t for t in plan.targets if params.selects(t.region, t.technology)]
    regions: dict[str, dict[str, Any]] = {}
    for t in plan.targets:
        regions.setdefault(t.region, {})[t.technology] = "?" if t.error else len(t.steps)
    out: dict[str, Any] = {"regions": regions}
    if plan.problems:
        out["error"] = "; ".join(plan.problems)[:300]
    if env.policy.promotion_from:
        out["staging_env"] = env.policy.promotion_from
        out["staging"] = promotion_check(project, domain, env, plan, params.technologies)
    return out


def lint(catalog):
    """The lint report when the lint package is installed; None keeps validate working without it."""
    try:
        from polymigrate.lint import lint_catalog
    except ImportError:
        return None
    return lint_catalog(catalog)


class PlanOperator(PolymigrateOperator):
    """Reads every selected region's ledgers and logs the plan; pushes ``plan.summary()``."""

    ui_color = "#e3d7f5"

    def run(self, context):
        from polymigrate.commands import plan_domain
        from polymigrate.errors import PermanentError

        params = RunParams.from_context(context)
        project, domain, catalog, env = self.load()
        self.check_binding(context, domain, catalog, env)
        unknown = [r for r in params.regions or [] if r not in env.regions]
        if unknown:
            raise AirflowFailException(f"param regions: {unknown} not in {self.environment} ({sorted(env.regions)})")
        from polymigrate.serving import served, skipped

        serve = served(project, domain, env)  # a target the environment cannot serve is skipped, said why
        skips = skipped(project, domain, env, params.regions, params.technologies)
        connect, close = _connector(domain, env, [t for t in params.technologies or domain.technology_order()
                                                  if any(t in ts for ts in serve.values())])
        try:
            plan = plan_domain(project, domain, catalog, env, connect, regions=params.regions,
                               target=params.target_version, out_of_order=params.allow_out_of_order)
            plan.targets = [t for t in plan.targets if params.selects(t.region, t.technology)
                            and t.technology in serve.get(t.region, ())]
            self.log.info("Plan %s (hash %s)\n%s%s", f"{self.domain}/{self.environment}", plan.hash[:12], plan_table(plan),
                          "".join(f"\nskipped {line}" for line in skips))
            if plan.problems:
                raise PermanentError("the plan cannot run:\n  " + "\n  ".join(plan.problems),
                                     hint="fix each line, then clear this task")
            self.check_dependencies(project, domain, env, params, plan)
        finally:
            close()
        self.check_promotion(context, project, domain, env, params, plan)
        self.emit(context, "planned", details={**plan.summary(), "dry_run": params.dry_run, "skipped": skips})
        return {**plan.summary(), "dry_run": params.dry_run, "skipped": skips}

    def check_promotion(self, context, project, domain, env, params, plan) -> None:
        """Production runs only what succeeded in every staging region, unless an approved override says so."""
        from polymigrate.errors import PolicyRefused

        if not env.policy.promotion_from:
            return
        missing = promotion_check(project, domain, env, plan, params.technologies)
        if not missing:
            self.log.info("Promotion gate: everything pending already succeeded in %s", env.policy.promotion_from)
            return
        listing = "\n  ".join(missing)
        approved = context["ti"].xcom_pull(task_ids="approve") or {}
        if params.dry_run:
            self.log.warning("Dry run: a real run would be refused by the promotion gate:\n  %s", listing)
        elif approved.get("override") and params.override:
            self.log.warning("EMERGENCY OVERRIDE (%s), approved by %s; not yet succeeded in %s:\n  %s",
                             params.override_reason, approved.get("approved_by"), env.policy.promotion_from, listing)
            self.emit(context, "overridden", details={"reason": params.override_reason, "gate": "promotion",
                                                      "by": ", ".join(approved.get("approved_by") or []),
                                                      "missing": missing[:XCOM_VERSIONS_CAP],
                                                      "changeset_hash": approved.get("changeset_hash")})
        else:
            self.emit(context, "refused", details={"reason": f"not yet succeeded in {env.policy.promotion_from}",
                                                   "gate": "promotion", "missing": missing[:XCOM_VERSIONS_CAP]})
            raise PolicyRefused(f"{len(missing)} migration(s) have not succeeded in {env.policy.promotion_from} yet:\n  "
                                + listing, hint=f"run the {env.policy.promotion_from} DAG first (or, in an emergency, "
                                "trigger with emergency_override and a reason, which needs the stricter approval)")

    def check_dependencies(self, project, domain, env, params, plan) -> None:
        """Refuse while a ``depends_on`` domain has pending migrations on one of our targets."""
        from polymigrate.blueprint import dag_id
        from polymigrate.commands import load_domain, plan_domain
        from polymigrate.errors import PermanentError

        ours = {(t.region, t.technology) for t in plan.targets}
        for dep in domain.depends_on:
            dep_project, dep_domain, dep_catalog = load_domain(self.specs_root, dep)
            connect, close = _connector(dep_domain, env, sorted({tech for _, tech in ours}))
            try:
                dep_plan = plan_domain(dep_project, dep_domain, dep_catalog, env, connect, regions=params.regions)
            finally:
                close()
            dep_targets = [t for t in dep_plan.targets if (t.region, t.technology) in ours]
            waiting = [f"{t.region}/{t.technology}: {len(t.steps)} pending (first {t.steps[0].script})"
                       for t in dep_targets if t.steps]
            waiting += [f"{t.region}/{t.technology}: {e}" for t in dep_targets for e in ([t.error] if t.error else []) + t.problems]
            if waiting:
                raise PermanentError(f"'{self.domain}' depends on '{dep}', which has pending migrations on the same targets:\n  "
                                     + "\n  ".join(waiting),
                                     hint=f"run the DAG {dag_id(dep, env.name)} first, then clear this task")


def _connector(domain, env, technologies: list[str] | None = None):
    """A ``Connect`` for ``plan_domain`` and a function closing the clients it opened.

    Technologies outside ``technologies`` are not connected to (their targets are dropped).
    """
    from polymigrate.adapters import adapter_class
    from polymigrate_airflow.connections import build_client

    clients: list[Any] = []

    def connect(region: str, technology: str):
        if technologies is not None and technology not in technologies:
            return None
        client = build_client(technology, env.connection_id(region, technology))
        clients.append(client)
        return adapter_class(technology)(client, domain=domain.name, settings=domain.technologies.get(technology))

    def close() -> None:
        for c in clients:
            if callable(getattr(c, "close", None)):
                c.close()

    return connect, close


def plan_table(plan) -> str:
    """The plan as a fixed-width table for the task log."""
    rows = [("region", "technology", "current", "pending", "first", "last", "notes")]
    for t in plan.targets:
        notes = "; ".join(t.problems + ([t.error] if t.error else []))
        rows.append((t.region, t.technology, t.current_version or "-", str(len(t.steps)),
                     t.steps[0].script if t.steps else "-", t.steps[-1].script if t.steps else "-", notes or "ok"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + f"\n{plan.pending} migration(s) pending in total"


class MigrationOperator(PolymigrateOperator):
    """Applies one technology's pending migrations in one region through the core executor.

    Idempotent: the executor re-reads the ledger under the target's lock, so a retry or a cleared
    task applies only what is still pending.
    """

    ui_color = "#d4f0d4"
    template_fields = ("domain", "environment", "region", "technology")

    def __init__(self, *, region: str, technology: str, **kwargs):
        super().__init__(**kwargs)
        self.region, self.technology = region, technology

    def run(self, context):
        from polymigrate.executor import migrate
        from polymigrate_airflow.connections import open_adapter

        params = RunParams.from_context(context)
        if not params.selects(self.region, self.technology):
            raise AirflowSkipException(f"{self.region}/{self.technology} is not selected in this run "
                                       "(params regions / technologies)")
        plan_summary = context["ti"].xcom_pull(task_ids="plan")
        if plan_summary is None:
            raise AirflowFailException("no plan in this run: the plan task did not succeed; clear it first")
        project, domain, catalog, env = self.load()
        sink = self.sink(env)  # before touching the target: a required audit store must be reachable
        self.check_binding(context, domain, catalog, env)
        if env.policy.window is not None and not params.dry_run:
            self.wait_for_window(context, project, domain, catalog, env, params)
        ctx = self.run_context(context, env, self.region, plan_hash=plan_summary.get("hash"))
        conn_id = env.connection_id(self.region, self.technology)
        started = time.monotonic()
        with open_adapter(self.technology, conn_id, domain=domain.name,
                          settings=domain.technologies.get(self.technology)) as adapter:
            self.log.info("%s/%s: %s via connection '%s'%s", self.region, self.technology, adapter.target, conn_id,
                          " (dry run)" if params.dry_run else "")
            result = migrate(adapter, catalog.applicable(self.technology), ctx, target=params.target_version,
                             out_of_order=params.allow_out_of_order, dry_run=params.dry_run, sink=sink,
                             on_progress=lambda n, total, info: self.log.info("[%d/%d] %s %s", n, total,
                                                                                 "checking" if params.dry_run else "applying", info.script))
        for a in result.applied:
            self.log.info("%s %s (%s ms)", a["action"], a["script"], a["ms"])
        self.log.info("%s/%s: %d applied, %d already applied, now at version %s", self.region, self.technology,
                      len(result.applied), result.skipped, result.current_version)
        versions = [a["version"] or a["script"] for a in result.applied]
        return {"applied": len(versions), "versions": versions[:XCOM_VERSIONS_CAP],
                "ms": sum(a["ms"] for a in result.applied), "wall_ms": int((time.monotonic() - started) * 1000),
                "current_version": result.current_version, "dry_run": params.dry_run}


    def wait_for_window(self, context, project, domain, catalog, env, params) -> None:
        """Defer (no worker slot held) until the window is open long enough for the pending migrations."""
        from datetime import datetime, timezone

        from airflow.providers.standard.triggers.temporal import DateTimeTrigger
        from polymigrate.errors import PolicyRefused
        from polymigrate.policy import Promotable, wait_until
        from polymigrate.reconcile import reconcile, to_apply
        from polymigrate_airflow.connections import open_adapter

        with open_adapter(self.technology, env.connection_id(self.region, self.technology), domain=domain.name,
                          settings=domain.technologies.get(self.technology)) as adapter:
            infos = reconcile(catalog.applicable(self.technology), adapter.read_ledger(),
                              target=params.target_version, out_of_order=params.allow_out_of_order)
        pending = [Promotable(self.technology, i.version, i.script, i.migration.checksum) for i in to_apply(infos)]
        if not pending:
            return  # nothing to run: no reason to wait for the window
        estimate, unknown = self.rehearsal_estimate(project, domain, env, pending)
        try:
            moment = wait_until(env.policy.window, datetime.now(timezone.utc), estimate)
        except ValueError as exc:
            self.emit(context, "refused", region=self.region, technology=self.technology,
                      details={"reason": str(exc), "gate": "window", "estimate_seconds": estimate})
            raise PolicyRefused(f"{self.region}/{self.technology}: {exc}; it would never start",
                                hint="split the migration, or widen policy.window of " + env.name) from None
        what = (f"estimate {estimate:.0f}s from rehearsals" if estimate is not None else "no rehearsal estimate") + \
            (f" ({len(unknown)} file(s) never rehearsed: {', '.join(unknown[:5])})" if unknown else "")
        if moment is None:
            self.log.info("Execution window open; %d pending, %s", len(pending), what)
            return
        self.log.info("Execution window of %s closed or too short for %d pending (%s): waiting until %s "
                      "without holding a worker slot", env.name, len(pending), what, moment.isoformat())
        self.defer(trigger=DateTimeTrigger(moment=moment), method_name="execute_after_window")

    def execute_after_window(self, context, event=None):
        """Resumed by the window's trigger: check everything again (the window, the binding, the ledger)."""
        return self.execute(context)

    def rehearsal_estimate(self, project, domain, env, pending) -> tuple[float | None, list[str]]:
        """Seconds the pending files took in the rehearsal environment's ledgers (None: unknown)."""
        from polymigrate.gates import read_staging_ledgers
        from polymigrate.policy import estimate_seconds

        name = staging_of(project, env)
        staging = project.environments.get(name or "")
        if staging is None:
            return None, [p.script for p in pending]
        connect, close = _connector(domain, staging, [self.technology])
        try:
            read = read_staging_ledgers(project, domain, staging, connect, [self.technology])
        finally:
            close()
        for (region, tech), why in read.unreadable.items():
            self.log.info("rehearsal ledger %s/%s in %s not readable: %s", region, tech, name, why)
        return estimate_seconds(pending, read.ledgers)


class PostgresMigrationOperator(MigrationOperator):
    """PostgreSQL migrations of one region (connection through ``PostgresHook``)."""

    ui_color = "#cfe3f3"


class RedisMigrationOperator(MigrationOperator):
    """Redis Lua migrations of one region (connection through ``RedisHook``)."""

    ui_color = "#f6d2cc"


class VerifyOperator(PolymigrateOperator):
    """After a region's execute tasks: every ledger matches the catalog up to the target version."""

    ui_color = "#cdeee6"
    template_fields = ("domain", "environment", "region")

    def __init__(self, *, region: str, technologies: list[str], **kwargs):
        super().__init__(**kwargs)
        self.region, self.technologies = region, list(technologies)

    def run(self, context):
        from polymigrate.errors import PermanentError
        from polymigrate.reconcile import current_version, reconcile, to_apply, validation_problems
        from polymigrate_airflow.connections import open_adapter

        params = RunParams.from_context(context)
        if not params.selects(self.region):
            raise AirflowSkipException(f"region {self.region} is not selected in this run (param regions)")
        project, domain, catalog, env = self.load()
        versions: dict[str, str | None] = {}
        failures: list[str] = []
        for tech in [t for t in self.technologies if params.selects(self.region, t)]:
            conn_id = env.connection_id(self.region, tech)
            with open_adapter(tech, conn_id, domain=domain.name, settings=domain.technologies.get(tech)) as adapter:
                infos = reconcile(catalog.applicable(tech), adapter.read_ledger(), target=params.target_version,
                                  out_of_order=params.allow_out_of_order)
            versions[tech] = current_version(infos)
            failures += [f"{tech}: {p}" for p in validation_problems(infos, out_of_order=params.allow_out_of_order)]
            pending = to_apply(infos)
            if pending and not params.dry_run:
                failures.append(f"{tech}: {len(pending)} migration(s) still pending after execute, first {pending[0].script}")
            self.log.info("%s/%s: version %s, %d pending", self.region, tech, versions[tech], len(pending))
        if failures:
            raise PermanentError(f"verification failed in {self.region}:\n  " + "\n  ".join(failures),
                                 hint="read the execute task's log for this region, fix, then clear the failed task")
        if params.dry_run:  # nothing was applied: the trail must not read as a verified change
            self.log.info("dry run: %s checked, nothing applied, no 'verified' event", self.region)
            return {"region": self.region, "versions": versions, "dry_run": True}
        self.emit(context, "verified", details={"region": self.region, "versions": versions}, region=self.region)
        return {"region": self.region, "versions": versions}
