"""The operators of a polymigrate DAG: each turns its task's context into one call of the command
layer (``polymigrate.commands``) and the outcome into what Airflow expects.

Every policy and gate decision is made in the core, the same as for the command line; here are only
Airflow's ways: params and XComs in, XComs out, ``TransientError`` → an ordinary failure that burns
a retry with backoff, any other polymigrate error → ``AirflowFailException`` (fail at once with the
file, statement and fix), a closed window or a dependency being migrated → deferral, an unselected
target → skip.

Constructors only store strings, so parsing a DAG file never loads a migration or a connection.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Callable

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from polymigrate.adapters import TECHNOLOGIES  # descriptors only: no adapter, no driver
from polymigrate.blueprint import dag_id as dag_id_of
from polymigrate_airflow import lineage, observability  # lineage, metrics, notifications: none fails a task
from polymigrate_airflow.init_levels import one_init_level
from polymigrate_airflow.task_context import RunParams, who

XCOM_VERSIONS_CAP = 50  # keep execute XComs small even for a 500-migration first run


class PolymigrateMixin:
    """Shared by every polymigrate operator (including the HITL-based approve task)."""

    specs_root: str
    domain: str
    environment: str

    def open_run(self, context, trigger: dict | None = None):
        """The command layer's ``Run`` for this task: specs loaded once, audit sink open (required where the
        environment's policy says so, before any target is touched), connections through the hooks."""
        from polymigrate.commands import open_run
        from polymigrate_airflow.connections import AirflowConnector, audit_conninfo

        run = self._run = open_run(self.specs_root, self.domain, self.environment,
                                   params=RunParams.from_context(context), who=who(context),
                                   connector=AirflowConnector(), audit=audit_conninfo, trigger=trigger, log=self.log)
        ti = context.get("ti")
        if ti is not None and (ti.try_number or 1) > 1 and not getattr(self, "_retry_recorded", False):
            # compliance wants every retry (or clear) of a task on record, not only its outcome
            self._retry_recorded = True
            run.emit("task_retried", details={"try_number": ti.try_number, "max_tries": getattr(ti, "max_tries", None)})
            observability.retried(self)
        return run

    def guarded(self, context, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn`` mapping polymigrate errors onto Airflow's retry semantics."""
        from airflow.sdk.exceptions import AirflowRescheduleException, AirflowTaskTimeout, DownstreamTasksSkipped
        from polymigrate.errors import PolymigrateError, SpecError, TransientError

        try:
            return fn(context)
        except (AirflowSkipException, AirflowRescheduleException, DownstreamTasksSkipped):
            raise  # not failures (deferral and awaiting input are BaseExceptions, never caught here)
        except TransientError as exc:
            self.log.warning("Transient failure, Airflow will retry with backoff: %s", exc)
            self.record_failure(context, exc, retryable=True)
            raise
        except SpecError as exc:
            failure = AirflowFailException(f"{len(exc.problems)} problem(s) in the specs of '{self.domain}':\n"
                                           + "\n".join(f"  - {p}" for p in exc.problems))
            self.record_failure(context, failure)
            raise failure from None
        except PolymigrateError as exc:
            self.record_failure(context, exc)
            raise AirflowFailException(str(exc)) from None
        except (Exception, AirflowTaskTimeout) as exc:  # a bug, a driver error, a timeout: a failure all the same
            self.record_failure(context, exc, retryable=not isinstance(exc, AirflowFailException))
            raise
        finally:
            run, self._run = getattr(self, "_run", None), None
            if run is not None:
                run.close()

    def record_failure(self, context, error: BaseException, *, retryable: bool = False) -> None:
        """The failure as a ``task_failed`` audit event (compliance reads a run's outcome there),
        through the run's sink, or one opened for it when the run could not be opened."""
        from polymigrate.commands.failures import record_failure
        from polymigrate_airflow.connections import audit_conninfo

        record_failure(getattr(self, "_run", None), error, retryable=retryable, region=getattr(self, "region", None),
                       technology=getattr(self, "technology", None), root=self.specs_root, domain=self.domain,
                       environment=self.environment, who=who(context), audit=audit_conninfo, log=self.log)
        self.failure_recorded = True  # the failure callbacks (callbacks.py) then record nothing more
        observability.failure(self, context, error, retryable=retryable, who=who(context))  # told on the final try

    @staticmethod
    def upstream(context, task_id: str) -> dict:
        return context["ti"].xcom_pull(task_ids=task_id) or {}

    def approved(self, context) -> tuple[str | None, dict]:
        """(the hash the approve task approved, the summary it approved): re-evaluated by approve when
        it was cleared after a fix, else validate's."""
        approve = self.upstream(context, "approve")
        return approve.get("changeset_hash"), approve.get("summary") or self.upstream(context, "validate")

    def skip(self, reason: str):
        """Skip saying why in the task's log (Airflow's own line does not carry the reason)."""
        self.log.info("Skipped: %s", reason)
        raise AirflowSkipException(reason)


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

    def wait_until(self, moment: datetime, why: str):
        """Defer until ``moment`` (no worker slot held meanwhile); the trigger then resumes the task."""
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        self.log.info("Waiting until %s:\n%s", moment.isoformat(), why)
        self.defer(trigger=DateTimeTrigger(moment=moment), method_name="resume")

    def resume(self, context, event=None):
        """Resumed after a wait: the task runs again from the start, every check made again."""
        return self.execute(context)

    execute_after_window = resume  # the name tasks deferred by an earlier release resume through


class ValidateOperator(PolymigrateOperator):
    """Loads the domain, checks its catalog and lint findings; fails with the full list."""

    ui_color = "#d8e8f7"

    def run(self, context):
        from dataclasses import asdict

        from polymigrate.commands.verbs import validate

        ti, dag_run = context.get("ti"), context.get("dag_run")
        first = ti is None or (ti.try_number or 1) == 1  # first: even a run refused below is on record, with who
        trigger = {"by": getattr(dag_run, "triggering_user_name", None), "run_type": who(context).run_type,
                   "params": asdict(RunParams.from_context(context))} if first else None
        return validate(self.open_run(context, trigger=trigger))


class PlanOperator(PolymigrateOperator):
    """Reads every selected region's ledgers and logs the plan; pushes ``plan.summary()``."""

    ui_color = "#e3d7f5"

    DEPENDENCY_POLL = timedelta(seconds=10)  # how often the triggerer looks at a dependency's runs (triggers.py)

    def run(self, context):
        from polymigrate.commands.approval import check_approval
        from polymigrate.commands.noop import plan_record
        from polymigrate.commands.verbs import plan
        from polymigrate.errors import DependencyPending

        run = self.open_run(context)
        grant = check_approval(run, *self.approved(context))
        try:
            result = plan(run, grant)
        except DependencyPending as exc:  # a nightly schedule starts dependents beside their dependencies
            running = self.running_dependencies(context, exc.domains)
            if not running:
                raise  # nobody is migrating it: refused at once, as on the command line
            from polymigrate_airflow.triggers import DependencyRunsEnded  # the triggerer's side: not imported at parse
            self.log.info("Waiting until %s no longer run(s), then planning again:\n%s", ", ".join(running), exc)
            self.defer(trigger=DependencyRunsEnded(running, self.DEPENDENCY_POLL.total_seconds()), method_name="resume")
        return {**result.summary(), "dry_run": run.params.dry_run, **plan_record(result, grant)}

    def running_dependencies(self, context, domains: list[str]) -> list[str]:
        """The DAGs of ``domains`` in this environment with a run queued or running (Airflow's record)."""
        return [i for i in (dag_id_of(d, self.environment) for d in domains) if context["ti"].get_dr_count(dag_id=i, states=["queued", "running"])]


class MigrationOperator(lineage.Lineage, PolymigrateOperator):
    """Applies one technology's pending migrations in one region through the command layer.

    Idempotent: the executor re-reads the ledger under the target's lock, so a retry or a cleared
    task applies only what is still pending. Which adapter runs is the adapter registry's decision,
    at execute time: a technology without one fails then, saying so.
    """

    ui_color = "#d4f0d4"
    template_fields = ("domain", "environment", "region", "technology")

    def __init__(self, *, specs_root: str, domain: str, environment: str, region: str, technology: str,
                 phase: str | None = None, **kwargs):
        BaseOperator.__init__(self, **kwargs)  # the only apply_defaults level (one_init_level below)
        self.specs_root, self.domain, self.environment = specs_root, domain, environment
        self.region, self.technology, self.phase = region, technology, phase

    def run(self, context):
        from polymigrate.commands.contract_approval import RecordedApprovals
        from polymigrate.commands.gates import before_target
        from polymigrate.commands.noop import nothing_to_do
        from polymigrate.commands.verbs import migrate_target
        from polymigrate_airflow.connections import AirflowConnector

        params = RunParams.from_context(context)
        if not params.selects(self.region, self.technology):
            self.skip(f"{self.region}/{self.technology} is not selected in this run (params regions: "
                      f"{params.regions or 'all'}, technologies: {params.technologies or 'all'})")
        plan_summary = context["ti"].xcom_pull(task_ids="plan")
        if plan_summary is None:
            raise AirflowFailException("no plan in this run: the plan task did not succeed; clear it first")
        started = time.monotonic()  # one ledger read where plan found nothing pending, no file (commands.noop)
        result = nothing_to_do(self.specs_root, self.domain, self.environment, self.region, self.technology, plan_summary,
                               connector=AirflowConnector(), run_id=context.get("run_id"), try_number=context["ti"].try_number,
                               approved_hash=lambda: self.upstream(context, "approve").get("changeset_hash"), phase=self.phase,
                               dry_run=params.dry_run, log=self.log)
        if result is None:  # today's full path: gates, approval re-check, lock, fence, the plan-hash check
            run = self.open_run(context)  # opens the audit sink before any target is touched
            verified = self.upstream(context, f"{self.region}.verify_before_contract").get("verified_at") \
                if self.phase == "contract" else None
            # the command layer's gates, in the order the command line passes them too
            verdict = before_target(run, self.region, self.technology, RecordedApprovals(*self.approved(context)),
                                    phase=self.phase, verified_at=datetime.fromisoformat(verified) if verified else None)
            if verdict.until is not None:  # a window, a soak: waited for by the triggerer
                self.wait_until(verdict.until, verdict.message)
            started = time.monotonic()
            result = migrate_target(run, self.region, self.technology, plan_hash=plan_summary.get("hash"), phase=self.phase,
                                    on_progress=lambda n, total, info: self.log.info(
                                        "[%d/%d] %s %s", n, total, "would apply (dry run)" if params.dry_run else "applying", info.script))
        observability.migrated(self, result)
        versions = [a["version"] or a["script"] for a in result.applied]
        return {"applied": len(versions), "versions": versions[:XCOM_VERSIONS_CAP],
                "ms": sum(a["ms"] for a in result.applied), "wall_ms": int((time.monotonic() - started) * 1000),
                "current_version": result.current_version, "dry_run": params.dry_run}


def _technology_operator(tech) -> type[MigrationOperator]:
    """One subclass per technology, named and coloured by its descriptor: Airflow's UI colours a task
    by its operator class, so each technology needs a class of its own."""
    return type(MigrationOperator)(tech.operator, (MigrationOperator,), {
        "__module__": __name__, "__qualname__": tech.operator, "ui_color": tech.ui_color,
        "__doc__": f"{tech.key} migrations of one region (client from connections.{tech.client_factory})."})


# PostgresMigrationOperator, MongoMigrationOperator, RedisMigrationOperator, ElasticsearchMigrationOperator
for _tech in TECHNOLOGIES.values():
    globals()[_tech.operator] = _technology_operator(_tech)
del _tech


class VerifyOperator(PolymigrateOperator):
    """After a region's execute tasks: every ledger matches the catalog up to the target version."""

    ui_color = "#cdeee6"
    template_fields = ("domain", "environment", "region")

    def __init__(self, *, specs_root: str, domain: str, environment: str, region: str, technologies: list[str],
                 phase: str | None = None, **kwargs):
        BaseOperator.__init__(self, **kwargs)  # the only apply_defaults level (one_init_level below)
        self.specs_root, self.domain, self.environment = specs_root, domain, environment
        self.region, self.technologies, self.phase = region, list(technologies), phase

    def run(self, context):
        from polymigrate.commands.verbs import verify_region

        params, before = RunParams.from_context(context), f"{self.region}.verify_before_contract"
        if not params.selects(self.region):
            self.skip(f"region {self.region} is not selected in this run (param regions: {params.regions})")
        proved = self.upstream(context, before) if self.phase is None and before in self.dag.task_dict else None  # not proved twice
        return observability.verified(self, context, verify_region(self.open_run(context), self.region, self.technologies, phase=self.phase, proved=proved))


class DriftOperator(PolymigrateOperator):
    """Nightly, one domain of an environment: every target's live schema against the snapshot its
    last successful run recorded; the differences go to the audit store as a ``drift`` event. Skips
    where no audit store is configured (no baselines to compare with)."""

    ui_color = "#f3e5d0"

    def run(self, context):
        from polymigrate.commands.drift import drift_domain, store_of

        run = self.open_run(context)
        if store_of(run.sink) is None:
            raise AirflowSkipException(f"{self.environment} has no audit store configured: drift compares with the "
                                       "snapshots recorded there (configure the polymigrate_audit connection)")
        return observability.drifted(self, context, drift_domain(run))


one_init_level(BaseOperator, PolymigrateOperator, MigrationOperator, VerifyOperator)  # issue 24, P4
