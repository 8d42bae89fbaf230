"""What a task's Airflow context means to the command layer: the run's params and who runs it."""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException


class RunParams:
    """The run's params as the command layer takes them (``polymigrate.commands.RunParams``)."""

    @staticmethod
    def from_context(context):
        """From the task's context; a bad param fails the task at once, naming it."""
        from polymigrate.commands import RunParams as Params, UsageError  # not at DAG parse time

        try:
            return Params.from_params(context.get("params") or {})
        except UsageError as exc:
            raise AirflowFailException(str(exc)) from None


def who(context):
    """Who runs this task: the triggering user (or the run type) as Airflow knows it."""
    from polymigrate.commands import Who

    run, ti = context.get("dag_run"), context.get("ti")
    user = getattr(run, "triggering_user_name", None)
    run_type = getattr(run, "run_type", None) or "unknown"
    run_type = str(getattr(run_type, "value", run_type))  # "scheduled", not "DagRunType.SCHEDULED"
    return Who(f"{user}@airflow" if user else f"{run_type}@airflow", user or run_type, context.get("run_id"),
               origin="airflow", run_type=run_type, dag_id=getattr(ti, "dag_id", None),
               task_id=getattr(ti, "task_id", None), try_number=getattr(ti, "try_number", None))
