"""The one module that turns ``DagBlueprint``s into Airflow DAGs.

Every decision about a DAG's shape was taken in ``polymigrate.blueprint`` (pure, unit-tested); this
module only imports the operator classes it names and wires the dependencies it was given.
"""

from __future__ import annotations

import functools
import importlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk import DAG, BaseOperator, Param, TaskGroup
from airflow.sdk.definitions.param import ParamsDict

from polymigrate.blueprint import DagBlueprint, compile_drift, compile_project
from polymigrate.spec.loader import load_project
from polymigrate_airflow import callbacks
from polymigrate_airflow.timetables import timetable_for


@functools.lru_cache(maxsize=None)
def operator_class(path: str) -> type:
    """The operator class a blueprint names by its dotted path; a name that does not resolve is an
    error now, at DAG build time, never a generic stand-in that fails later."""
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ImportError(f"blueprint names operator {path!r}, which cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseOperator)):
        raise TypeError(f"blueprint names {path!r}, which is not an Airflow operator")
    return cls


def _default_args(bp: DagBlueprint) -> dict:
    args = dict(bp.default_args)
    delay = args.pop("retry_delay_seconds", None)
    if delay is not None:
        args["retry_delay"] = timedelta(seconds=delay)
    # a try whose worker was killed outright is failed by the scheduler, never by the operator: these
    # callbacks (run then by the DAG processor) put it on record as the operator would have
    args.setdefault("on_failure_callback", callbacks.on_failure)
    args.setdefault("on_retry_callback", callbacks.on_retry)
    return args


def render(bp: DagBlueprint) -> DAG:
    """One DAG from its blueprint."""
    dag = DAG(
        dag_id=bp.dag_id,
        description=bp.description,
        doc_md=bp.doc_md,
        tags=set(bp.tags),
        schedule=timetable_for(bp.schedule),
        start_date=datetime.fromisoformat(bp.start_date).replace(tzinfo=timezone.utc),
        catchup=False,
        **({} if bp.start_paused is None else {"is_paused_upon_creation": bp.start_paused}),
        max_active_runs=bp.max_active_runs,
        default_args=_default_args(bp),
        params=_params(bp),
    )
    # Airflow deep-copies the DAG's params into every operator, once per class of its hierarchy
    # (about three times per task): with our params' schemas that was most of the parse time (issue
    # 24). Tasks are built while the DAG holds none and keep only their own (the approval form's
    # comment). A task needs no copy: at run time Airflow merges the DAG's params into its context
    # (``process_params``: the DAG's, then the task's, then the run's conf), and the trigger form
    # reads the DAG's. Giving every task a copy cost 0.13 of the 1.15 s that parsing 200 DAGs takes,
    # and repeated 5 params in every serialized task (tests/e2e/test_dagbag.py).
    dag_params = dag.params
    object.__setattr__(dag, "params", ParamsDict())
    try:
        _tasks(bp, dag)
    finally:
        object.__setattr__(dag, "params", dag_params)
    return dag


# Airflow validates a Param with jsonschema.validate, which first checks the schema against its
# dialect's metaschema: for the default 2020-12 that was 3x the cost of draft 7 (0.43 ms against 0.15),
# paid for every param of every task at each run's start and each serialization (issue 24, P6).
# Our schemas use only what draft 7 has (type, enum, items, minItems, examples).
PARAM_DIALECT = "http://json-schema.org/draft-07/schema#"


def _params(bp: DagBlueprint) -> ParamsDict:
    return ParamsDict({name: Param(**{"$schema": PARAM_DIALECT, **spec}) for name, spec in bp.params.items()})


def _tasks(bp: DagBlueprint, dag: DAG) -> dict[str, BaseOperator]:
    with dag:
        groups = {g.name: TaskGroup(group_id=g.name, tooltip=g.title) for g in bp.groups}
        tasks = {}
        for t in bp.tasks:
            extra = {} if t.retries is None else {"retries": t.retries}
            if t.queue:
                extra["queue"] = t.queue
            cls = operator_class(t.operator)
            tasks[t.full_id] = cls(task_id=t.task_id, task_group=groups.get(t.group) if t.group else None,
                                   trigger_rule=t.trigger_rule, **extra, **t.arguments)
        for t in bp.tasks:
            for up in t.upstream:
                tasks[up] >> tasks[t.full_id]
    return tasks


def blueprints(specs_root: str | Path) -> list[DagBlueprint]:
    """Every DAG's blueprint: the migrate DAGs, then the nightly ``drift__<environment>`` ones."""
    project = load_project(Path(specs_root).resolve())
    return compile_project(specs_root, project) + compile_drift(specs_root, project)


def build_dags(specs_root: str | Path) -> dict[str, DAG]:
    """Every DAG of a spec tree, by dag_id (what ``dags/polymigrate_dags.py`` exposes)."""
    return {bp.dag_id: render(bp) for bp in blueprints(specs_root)}
