"""The DAG file as Airflow's DagBag sees it: every sample DAG loads with no connection configured;
a broken domain fails loudly in its own DAG while the others still load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPECS = ROOT / "migration_specs"


def dagbag(monkeypatch, specs: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("POLYMIGRATE_SPECS", str(specs))
    return DagBag(dag_folder=str(ROOT / "dags" / "polymigrate_dags.py"))


def test_every_sample_dag_loads_without_connections(monkeypatch):
    from polymigrate.blueprint import compile_drift, compile_project

    bag = dagbag(monkeypatch, SPECS)
    assert bag.import_errors == {}
    expected = {b.dag_id for b in compile_project(SPECS) + compile_drift(SPECS)}
    assert set(bag.dags) == expected
    drift = bag.dags["drift__production"]
    assert type(drift.timetable).__name__ == "RehearsalTimetable" and drift.timetable._expression == "0 3 * * *"
    assert {t.task_id for t in drift.tasks} == {"common", "social_commerce", "warehousing", "centralized_dashboard",
                                                "courier_services"}
    assert all(type(t).__name__ == "DriftOperator" and not t.upstream_task_ids for t in drift.tasks)
    dag = bag.dags["migrate__social_commerce__production"]
    assert dag.max_active_runs == 1
    assert dag.schedule is None  # production: manual only
    assert set(dag.params.keys()) == {"dry_run", "target_version", "regions", "technologies", "allow_out_of_order",
                                      "emergency_override", "emergency_reason"}  # production needs approvals
    assert dag.params.get_param("regions").value == ["western_europe", "eastern_europe", "north_africa", "sub_saharan_africa"]
    assert {"polymigrate", "env:production", "domain:social-commerce"} <= set(dag.tags)
    assert "social-commerce in production" in dag.doc_md
    assert "team-social@example.com" in dag.owner
    assert type(dag.get_task("plan")).__name__ == "PlanOperator"
    assert type(dag.get_task("approve")).__name__ == "ApproveOperator"
    # the full_name release runs phase-major; production approves its contract phase separately, per region
    assert type(dag.get_task("western_europe.expand_postgresql")).__name__ == "PostgresMigrationOperator"
    assert type(dag.get_task("western_europe.migrate_mongodb")).__name__ == "MongoMigrationOperator"
    assert dag.get_task("eastern_europe.expand_postgresql").upstream_task_ids == {"western_europe.verify"}
    assert type(dag.get_task("western_europe.approve_contract")).__name__ == "ApproveContractOperator"
    assert dag.get_task("western_europe.approve_contract").upstream_task_ids == {"western_europe.verify_before_contract"}
    assert dag.get_task("western_europe.contract_postgresql").upstream_task_ids == {"western_europe.approve_contract"}
    staging = bag.dags["migrate__social_commerce__staging"]
    assert type(staging.timetable).__name__ == "RehearsalTimetable" and staging.timetable._expression == "0 2 * * *"
    assert staging.is_paused_upon_creation is False  # nightly rehearsal, unpaused from the start


def test_a_task_process_builds_only_the_dag_it_runs(monkeypatch):
    """Airflow's task runner parses the DAG file with the parsing context naming the DAG it runs: the
    file builds that DAG alone (the others' operators were most of a task's parse, issue 24); a DAG id
    the tree does not have builds everything, so Airflow's own lookup decides as before."""
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "migrate__common__staging")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "validate")
    one = dagbag(monkeypatch, SPECS)
    assert one.import_errors == {} and set(one.dags) == {"migrate__common__staging"}
    assert one.dags["migrate__common__staging"].get_task("validate")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "drift__staging")
    assert set(dagbag(monkeypatch, SPECS).dags) == {"drift__staging"}
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "migrate__gone__staging")
    assert len(dagbag(monkeypatch, SPECS).dags) == 24


def test_broken_domain_is_its_own_failing_dag_while_the_others_load(monkeypatch, tmp_path):
    specs = tmp_path / "specs"
    shutil.copytree(SPECS, specs)
    domain_yaml = specs / "social-commerce" / "domain.yaml"
    domain_yaml.write_text(domain_yaml.read_text() + "rollout: {strategy: sideways}\n")
    (specs / "common" / "postgresql" / "V3_bad-name.sql").write_text("select 1;")

    bag = dagbag(monkeypatch, specs)
    assert bag.import_errors == {}
    healthy = {d for d in bag.dags if d.startswith(("migrate__warehousing__", "migrate__courier_services__"))}
    assert len(healthy) == 8 and all(len(bag.dags[d].tasks) > 3 for d in healthy)
    # a domain depending on the broken one is broken too, saying why
    assert "social-commerce" in bag.dags["migrate__centralized_dashboard__production"].doc_md
    broken = bag.dags["migrate__social_commerce__development"]
    assert [t.task_id for t in broken.tasks] == ["validate"]
    assert "broken" in broken.tags
    line = len(domain_yaml.read_text().splitlines())
    assert f"domain.yaml:{line}" in broken.doc_md and "strategy" in broken.doc_md
    # a bad migration file name is found by validate at run time (parse time reads no migration file)
    assert len(bag.dags["migrate__common__development"].tasks) > 3


def test_hostile_domains_never_hide_the_other_dags(monkeypatch, tmp_path):
    """Issue 14: an alias bomb, 10,000-deep nesting, a 10 MB file, a FIFO, links out of the tree."""
    from tests.hostile_specs import build

    specs = build(tmp_path / "specs", "bomb", "deep", "big", "fifo", "yaml-dev-zero", "symlink-out", "dev-zero")
    clean = dagbag(monkeypatch, SPECS)
    bag = dagbag(monkeypatch, specs)
    assert bag.import_errors == {}
    assert set(clean.dags) <= set(bag.dags)  # every sample DAG, intact
    assert all(len(bag.dags[d].tasks) == len(clean.dags[d].tasks) for d in clean.dags if not d.startswith("drift__"))
    # the drift DAG keeps every sample domain's task beside the hostile ones' (which fail naming why)
    assert {t.task_id for t in clean.dags["drift__development"].tasks} < {t.task_id for t in bag.dags["drift__development"].tasks}
    for domain, needle in (("hostile_bomb", "alias"), ("hostile_deep", "nested"), ("hostile_big", "MB"),
                           ("hostile_fifo", "not a regular file"), ("hostile_yaml_zero", "leaves the spec tree")):
        broken = bag.dags[f"migrate__{domain}__development"]
        assert [t.task_id for t in broken.tasks] == ["validate"] and needle in broken.doc_md, domain
    # migration files are not read at parse time: the links are refused by validate
    assert len(bag.dags["migrate__hostile_link__development"].tasks) > 3


def samples_with_a_broken_domain(tmp_path: Path, bad_keys: str) -> tuple[Path, Path]:
    """(a copy of the sample specs, its social-commerce domain.yaml ending in ``bad_keys``)."""
    specs = tmp_path / "specs"
    shutil.copytree(SPECS, specs)
    domain_yaml = specs / "social-commerce" / "domain.yaml"
    domain_yaml.write_text(domain_yaml.read_text() + bad_keys)
    return specs, domain_yaml


def test_broken_dag_validate_task_fails_naming_every_problem(monkeypatch, tmp_path, airflow_db):
    from airflow.sdk.exceptions import AirflowFailException
    from polymigrate_airflow.renderer import build_dags

    specs, domain_yaml = samples_with_a_broken_domain(tmp_path, "aprovals: 2\nrollout: {strategy: sideways}\n")
    dag = build_dags(specs)["migrate__social_commerce__development"]
    task = dag.get_task("validate")
    with pytest.raises(AirflowFailException) as err:
        task.execute(context={"ti": None, "params": {}})
    text = str(err.value)
    n = len(domain_yaml.read_text().splitlines())
    assert f"domain.yaml:{n - 1}: unknown key 'aprovals'" in text
    assert f"domain.yaml:{n}" in text and "strategy" in text


def test_a_broken_domains_drift_task_fails_naming_its_problems_beside_the_others(monkeypatch, tmp_path, airflow_db):
    from airflow.sdk.exceptions import AirflowFailException
    from polymigrate_airflow.renderer import build_dags

    specs, _ = samples_with_a_broken_domain(tmp_path, "aprovals: 2\n")
    dag = build_dags(specs)["drift__development"]
    assert {"warehousing", "common", "social_commerce"} <= set(dag.task_ids)
    with pytest.raises(AirflowFailException) as err:
        dag.get_task("social_commerce").execute(context={"ti": None, "params": {}})
    assert "unknown key 'aprovals'" in str(err.value)


def test_an_empty_region_or_technology_selection_is_refused_not_widened_to_all():
    from polymigrate_airflow.operators import AirflowFailException, RunParams

    with pytest.raises(AirflowFailException, match="param regions is empty"):
        RunParams.from_context({"params": {"regions": [], "technologies": ["postgresql"]}})
    with pytest.raises(AirflowFailException, match="param technologies is empty"):
        RunParams.from_context({"params": {"technologies": []}})
    chosen = RunParams.from_context({"params": {"regions": ["north_africa"]}})
    assert chosen.selects("north_africa", "redis") and not chosen.selects("western_europe", "redis")


def test_every_operator_the_blueprint_names_exists_and_a_missing_one_fails_the_build():
    from polymigrate.blueprint import MIGRATION_OPERATORS, OPERATORS
    from polymigrate_airflow.renderer import operator_class

    for technology, path in {**OPERATORS, **MIGRATION_OPERATORS}.items():
        assert operator_class(path).__name__ == path.rpartition(".")[2], technology
    with pytest.raises(ImportError, match="CassandraMigrationOperator"):
        operator_class("polymigrate_airflow.operators.CassandraMigrationOperator")


def test_a_technology_without_an_adapter_fails_at_execute_saying_so(tmp_path):
    from polymigrate.errors import PermanentError
    from polymigrate.spec import Domain, Environment
    from polymigrate_airflow.connections import AirflowConnector

    env = Environment(name="production", regions={"r1": {"name": "r1"}})
    with pytest.raises(PermanentError, match="r1/cassandra: no adapter for 'cassandra'"):
        AirflowConnector().open(env, "r1", "cassandra", Domain(name="shop"))


def test_each_task_runs_with_the_dag_params_without_a_copy_of_its_own(monkeypatch):
    """Issue 24: Airflow's per-operator deepcopy of the DAG's params was most of the parse time, so the
    renderer builds tasks without them. What a task sees at run time is unchanged: Airflow's
    ``process_params`` gives every task the DAG's params, then a run's conf over them; the approval
    form keeps only its own field; serialized tasks no longer repeat the DAG's params."""
    from airflow.providers.standard.operators.hitl import HITLOperator
    from airflow.sdk.definitions.param import process_params
    from airflow.serialization.serialized_objects import DagSerialization

    bag = dagbag(monkeypatch, SPECS)
    dag = bag.dags["migrate__social_commerce__production"]
    defaults = dag.params.dump()
    assert {"dry_run", "target_version", "regions", "technologies", "allow_out_of_order"} <= set(defaults)
    for task in dag.tasks:
        seen = process_params(dag, task, None, suppress_exception=False)
        if isinstance(task, HITLOperator):
            assert list(task.params.keys()) == ["comment"], task.task_id
            assert seen == {**defaults, "comment": None}, task.task_id
            continue
        assert len(task.params) == 0, task.task_id
        assert seen == defaults, task.task_id
    # a run's conf reaches a task over the DAG's params, and a value the schema forbids is refused there
    # (last: Airflow resolves the conf into the DAG's Param objects, as it did into each task's copies)
    plan = dag.get_task("plan")
    with pytest.raises(Exception, match="regions|north_pole"):
        process_params(dag, plan, {"regions": ["north_pole"]}, suppress_exception=False)
    assert process_params(dag, plan, {"dry_run": True, "regions": ["north_africa"]}, suppress_exception=False) == {
        **defaults, "dry_run": True, "regions": ["north_africa"]}
    serialized = DagSerialization.to_dict(dag)["dag"]
    assert serialized["params"], "the trigger form reads the DAG's params"
    carrying = {t["__var"]["task_id"]: [name for name, _ in t["__var"].get("params") or []] for t in serialized["tasks"]}
    assert {task: names for task, names in carrying.items() if names} == {
        task.task_id: ["comment"] for task in dag.tasks if isinstance(task, HITLOperator)}

def test_the_trigger_form_refuses_what_its_schema_forbids_in_the_dialect_it_declares():
    """The params declare JSON Schema draft 7 (issue 24: Airflow checks each schema on every
    validation, and 2020-12's metaschema cost 3x); a value the form forbids is still refused."""
    from airflow.sdk.definitions.param import ParamValidationError

    from polymigrate_airflow.renderer import PARAM_DIALECT, build_dags

    dag = build_dags(SPECS)["migrate__social_commerce__production"]
    regions = dag.params.get_param("regions")
    assert regions.schema["$schema"] == PARAM_DIALECT
    for bad in ([], ["atlantis"], "western_europe"):
        with pytest.raises(ParamValidationError):
            regions.resolve(bad)
    assert regions.resolve(["north_africa"]) == ["north_africa"]
    with pytest.raises(ParamValidationError):
        dag.params.get_param("dry_run").resolve("yes")
    assert dag.params.get_param("target_version").resolve(None) is None
