"""The shape of every DAG, decided by ``polymigrate.blueprint`` without Airflow."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

from polymigrate.blueprint import ALL_DONE, NONE_FAILED, compile_project, dag_id

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPECS = ROOT / "migration_specs"


def write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def tree(tmp_path):
    """A small spec tree: one environment with three regions, two domains."""
    write(tmp_path / "environments/dev.yaml", """
        regions: {r1: {}, r2: {}, r3: {}}
        policy:
          rollout: {strategy: sequential, halt_on_failure: true}
          retries: 3
          retry_delay_seconds: 7
    """)
    write(tmp_path / "shop/domain.yaml", """
        owners: [team@example.com]
        tags: [pilot]
        order: [redis, postgresql]
        technologies: {postgresql: {}, redis: {}}
    """)
    write(tmp_path / "shop/postgresql/V1__a.sql", "select 1;")
    write(tmp_path / "shop/postgresql/V1.10__b.sql", "select 2;")
    write(tmp_path / "shop/redis/1-x.lua", "return 1")
    write(tmp_path / "base/domain.yaml", "technologies: {postgresql: {}}\n")
    write(tmp_path / "base/postgresql/V1__a.sql", "select 1;")
    return tmp_path


def by_id(bps):
    return {b.dag_id: b for b in bps}


def upstream(bp, task):
    t = bp.task(task)
    return set(t.upstream), t.trigger_rule


def test_every_sample_domain_and_environment_gets_one_dag():
    from polymigrate.spec import load_project

    project = load_project(SPECS)
    bps = compile_project(SPECS, project)
    expected = {dag_id(d.name, e.name) for d in project.domains.values() for e in project.environments_of(d)}
    assert expected and {b.dag_id for b in bps} == expected
    assert all(not b.broken for b in bps)
    assert "migrate__social_commerce__production" in expected


def test_sample_schedules_follow_environment_policy():
    bps = by_id(compile_project(SPECS))
    assert bps["migrate__social_commerce__staging"].schedule == "0 2 * * *"
    assert bps["migrate__social_commerce__production"].schedule is None
    assert bps["migrate__social_commerce__development"].schedule is None


def test_healthy_dag_shape(tree):
    bp = by_id(compile_project(tree))["migrate__shop__dev"]
    assert [t.full_id for t in bp.tasks] == [
        "validate", "approve", "plan",
        "r1.redis", "r1.postgresql", "r1.verify",
        "r2.redis", "r2.postgresql", "r2.verify",
        "r3.redis", "r3.postgresql", "r3.verify",
    ]
    assert upstream(bp, "approve")[0] == {"validate"}
    assert upstream(bp, "plan")[0] == {"approve"}
    # domain order: redis before postgresql inside each region, then verify
    assert upstream(bp, "r1.postgresql")[0] == {"r1.redis"}
    assert upstream(bp, "r1.verify")[0] == {"r1.postgresql"}
    assert bp.task("r2.postgresql").operator == "polymigrate_airflow.operators.PostgresMigrationOperator"
    assert bp.task("r2.redis").operator == "polymigrate_airflow.operators.RedisMigrationOperator"
    assert bp.task("r2.redis").arguments == {"specs_root": str(tree.resolve()), "domain": "shop",
                                             "environment": "dev", "region": "r2", "technology": "redis"}
    assert bp.task("r2.verify").arguments["technologies"] == ["redis", "postgresql"]
    assert [g.name for g in bp.groups] == ["r1", "r2", "r3"]
    assert bp.max_active_runs == 1
    assert bp.owners == ("team@example.com",)
    assert {"polymigrate", "domain:shop", "env:dev", "pilot", "redis", "postgresql"} <= set(bp.tags)
    assert bp.default_args == {"owner": "team@example.com", "retries": 3, "retry_delay_seconds": 7,
                               "retry_exponential_backoff": True}
    assert bp.task("validate").retries == 0 and bp.task("approve").retries == 0


def test_params_offer_every_region_and_technology(tree):
    bp = by_id(compile_project(tree))["migrate__shop__dev"]
    assert set(bp.params) == {"dry_run", "target_version", "regions", "technologies", "allow_out_of_order"}
    assert bp.params["regions"]["default"] == ["r1", "r2", "r3"]
    assert bp.params["regions"]["items"]["enum"] == ["r1", "r2", "r3"]
    assert bp.params["technologies"]["default"] == ["redis", "postgresql"]
    assert bp.params["dry_run"]["default"] is False


def test_sequential_rollout_chains_regions_and_halts(tree):
    bp = by_id(compile_project(tree))["migrate__shop__dev"]
    assert upstream(bp, "r1.redis") == ({"plan"}, NONE_FAILED)
    assert upstream(bp, "r2.redis") == ({"r1.verify"}, NONE_FAILED)
    assert upstream(bp, "r3.redis") == ({"r2.verify"}, NONE_FAILED)
    assert bp.rollout == {"strategy": "sequential", "halt_on_failure": True, "order": ["r1", "r2", "r3"]}


def test_a_region_with_a_queue_sends_only_its_own_tasks_there(tree):
    """Workers that can reach a region's servers listen on its queue; the other tasks stay on
    Airflow's default queue (any worker)."""
    write(tree / "environments/dev.yaml", """
        regions: {r1: {queue: net-r1}, r2: {}}
    """)
    bp = by_id(compile_project(tree))["migrate__shop__dev"]
    queues = {t.full_id: t.queue for t in bp.tasks}
    assert {k for k, q in queues.items() if q == "net-r1"} == {"r1.redis", "r1.postgresql", "r1.verify"}
    assert queues["plan"] is queues["validate"] is queues["r2.postgresql"] is None


def test_a_queue_name_a_worker_cannot_listen_on_is_refused(tree):
    from polymigrate.spec import load_project

    write(tree / "environments/dev.yaml", """
        regions: {r1: {queue: "net r1; rm"}}
    """)
    problems = "\n".join(str(p) for p in load_project(tree).problems)
    assert "dev.yaml" in problems and "queue" in problems, problems


def test_sequential_without_halt_continues_after_a_failed_region(tree):
    write(tree / "shop/domain.yaml", """
        technologies: {postgresql: {}}
        rollout: {strategy: sequential, halt_on_failure: false}
    """)
    bp = by_id(compile_project(tree))["migrate__shop__dev"]
    assert upstream(bp, "r2.postgresql") == ({"r1.verify"}, ALL_DONE)
    assert upstream(bp, "r1.postgresql") == ({"plan"}, NONE_FAILED)


def test_parallel_rollout_starts_every_region_after_plan(tree):
    write(tree / "shop/domain.yaml", "technologies: {postgresql: {}}\nrollout: {strategy: parallel}\n")
    bp = by_id(compile_project(tree))["migrate__shop__dev"]
    for r in ("r1", "r2", "r3"):
        assert upstream(bp, f"{r}.postgresql") == ({"plan"}, NONE_FAILED)


def test_canary_rollout_runs_the_canary_first_then_the_rest_in_parallel(tree):
    write(tree / "shop/domain.yaml", "technologies: {postgresql: {}}\nrollout: {strategy: canary, canary_region: r2}\n")
    bp = by_id(compile_project(tree))["migrate__shop__dev"]
    assert upstream(bp, "r2.postgresql")[0] == {"plan"}
    assert upstream(bp, "r1.postgresql")[0] == {"r2.verify"}
    assert upstream(bp, "r3.postgresql")[0] == {"r2.verify"}
    assert bp.rollout["order"] == ["r2", "r1", "r3"]


def test_domain_region_subset_and_environment_subset(tree):
    write(tree / "environments/prod.yaml", "regions: {r1: {}, r2: {}}\n")
    write(tree / "shop/domain.yaml", "technologies: {postgresql: {}}\nregions: [r2]\nenvironments: [dev]\n")
    bps = by_id(compile_project(tree))
    assert "migrate__shop__prod" not in bps
    assert [g.name for g in bps["migrate__shop__dev"].groups] == ["r2"]
    assert "migrate__base__prod" in bps


def test_doc_describes_domain_regions_folders_and_approval(tree):
    write(tree / "environments/prod.yaml", """
        regions: {r1: {}}
        policy: {approvals: {required: 2, roles: [dba]}}
    """)
    bps = by_id(compile_project(tree))
    doc = bps["migrate__shop__dev"].doc_md
    assert "| postgresql | `shop/postgresql/` |" in doc and "| redis | `shop/redis/` |" in doc
    assert "R1, R2, R3" in doc and "Approval is automatic" in doc
    prod = bps["migrate__shop__prod"].doc_md
    assert "Needs 2 approval(s) by dba" in prod and "Required Actions" in prod
    # the on-call's retry after fixing a file, per environment, and why a run stays queued
    assert "Clear the failed task: the new files are linted and approved automatically again" in doc
    assert "Clear the `approve` task with **Downstream** selected" in prod
    assert "A run stays queued?** The DAG is paused" in doc


def test_broken_domain_gets_a_validate_only_dag_naming_its_problems_and_others_stay(tree):
    write(tree / "shop/domain.yaml", "technologies: {postgresql: {}}\naprovals: 2\n")
    bps = by_id(compile_project(tree))
    broken = bps["migrate__shop__dev"]
    assert broken.broken
    assert [t.full_id for t in broken.tasks] == ["validate"]
    assert broken.task("validate").operator == "polymigrate_airflow.operators.ValidateOperator"
    assert any("domain.yaml:2" in p and "aprovals" in p for p in broken.problems), broken.problems
    assert "aprovals" in broken.doc_md and "broken" in broken.tags
    assert not bps["migrate__base__dev"].broken
    assert len(bps["migrate__base__dev"].tasks) > 3


def test_broken_environment_file_yields_broken_dags_for_that_environment(tree):
    write(tree / "environments/prod.yaml", "regions: {r1: {}}\npolicy: {rollout: {strategy: sideways}}\n")
    bps = by_id(compile_project(tree))
    assert bps["migrate__base__prod"].broken
    assert any("prod.yaml" in p and "strategy" in p for p in bps["migrate__base__prod"].problems)
    assert not bps["migrate__base__dev"].broken


def test_blueprints_are_plain_json(tree):
    for bp in compile_project(tree):
        json.dumps(dataclasses.asdict(bp))


def test_compiling_opens_no_migration_file(tree):
    """Issue 24: parse reads spec YAML only. The DAG's phases come from domain.yaml, not from the
    files' headers, so no migration file is opened, whatever its phase (their names are listed for
    the description). Every open in Python, by name or descriptor, raises the ``open`` audit event."""
    write(tree / "shop/postgresql/V9__later.sql", "-- polymigrate: phase=contract\nDROP TABLE t;\n")
    opened: list[str] = []
    watching = [True]

    def hook(event, args):
        if watching and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # cannot be removed: ``watching`` turns it off
    try:
        assert compile_project(tree)
    finally:
        watching.clear()
    inside = [p for p in opened if p.startswith((str(tree), str(tree.resolve())))]
    assert inside and all(p.endswith((".yaml", ".yml")) for p in inside), inside


def test_blueprint_module_does_not_import_airflow():
    code = ("import sys; from polymigrate.blueprint import compile_project; "
            f"compile_project({str(SPECS)!r}); print('airflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_dag_id_is_safe_for_airflow():
    assert dag_id("social-commerce", "production") == "migrate__social_commerce__production"
    assert dag_id("Bad Name!", "dev") == "migrate__Bad_Name___dev"


# --- what an environment serves (16.2: scheduled runs must not ask for what they cannot reach) ------

def test_default_technologies_are_what_the_environment_serves(tree, monkeypatch):
    import polymigrate.adapters as adapters

    write(tree / "environments/dev.yaml", """
        regions:
          r1: {}
          r2: {technologies: [postgresql]}
        technologies: [postgresql, redis, mongodb]
        policy: {schedule: "0 2 * * *"}
    """)
    write(tree / "shop/domain.yaml", "technologies: {postgresql: {}, redis: {}, mongodb: {}, elasticsearch: {}}\n")
    write(tree / "shop/mongodb/1-posts.json", '{"commands": [{"create": "posts"}]}')
    write(tree / "shop/elasticsearch/1-idx.json", '{"steps": [{"create_index": {"index": "i_v1"}}]}')
    monkeypatch.setattr(adapters, "REGISTRY", {k: v for k, v in adapters.REGISTRY.items() if k != "mongodb"})
    bp = next(b for b in compile_project(tree) if b.dag_id == "migrate__shop__dev")
    techs = bp.params["technologies"]
    assert techs["default"] == ["postgresql", "redis"]
    assert techs["items"]["enum"] == ["postgresql", "mongodb", "redis", "elasticsearch"]  # still choosable
    assert "mongodb in r1: no mongodb adapter in this installation" in techs["description"]  # r2: region reason
    assert "elasticsearch: dev does not serve elasticsearch" in techs["description"]
    # the shape follows the spec: r2 has no redis task, nobody has an elasticsearch task
    assert [t.full_id for t in bp.tasks if t.group == "r2"] == ["r2.postgresql", "r2.verify"]
    assert [t.task_id for t in bp.tasks if t.group == "r1"] == ["postgresql", "mongodb", "redis", "verify"]
    assert bp.task("r2.verify").arguments["technologies"] == ["postgresql"]
    assert "redis in r2: region r2 of dev does not serve redis" in bp.doc_md


def test_scheduled_environments_start_unpaused_unless_the_policy_says_otherwise(tree):
    write(tree / "environments/dev.yaml", "regions: {r1: {}}\npolicy: {schedule: '0 2 * * *'}\n")
    write(tree / "environments/qa.yaml", "regions: {r1: {}}\npolicy: {schedule: '@daily', start_unpaused: false}\n")
    write(tree / "environments/prod.yaml", "regions: {r1: {}}\n")
    write(tree / "shop/domain.yaml", "technologies: {postgresql: {}}\n")
    bps = {b.environment: b for b in compile_project(tree) if b.domain == "shop"}
    assert (bps["dev"].schedule, bps["dev"].start_paused) == ("0 2 * * *", False)
    assert bps["qa"].start_paused is True
    assert (bps["prod"].schedule, bps["prod"].start_paused) == (None, None)
    assert "never starts a catch-up run" in bps["dev"].doc_md


def test_only_compiles_the_one_dag_asked_for_broken_ones_included(tmp_path):
    """A task process compiles the DAG it runs and no other (issue 24): a healthy one, a broken
    domain's, a drift DAG; an id the tree does not have compiles nothing."""
    from polymigrate.blueprint import compile_drift

    specs = tmp_path / "specs"
    shutil.copytree(pathlib.Path(__file__).resolve().parents[2] / "migration_specs", specs)
    (specs / "warehousing" / "domain.yaml").write_text("technologies: {nosuch: {}}\n")
    everything = {b.dag_id: b for b in compile_project(specs) + compile_drift(specs)}
    for wanted in ("migrate__social_commerce__production", "migrate__warehousing__staging", "drift__development"):
        got = compile_project(specs, only=wanted) + compile_drift(specs, only=wanted)
        assert [b.dag_id for b in got] == [wanted] and got[0] == everything[wanted], wanted
    assert [t.task_id for t in everything["migrate__warehousing__staging"].tasks] == ["validate"]  # broken, compiled
    assert compile_project(specs, only="migrate__gone__staging") + compile_drift(specs, only="migrate__gone__staging") == []
