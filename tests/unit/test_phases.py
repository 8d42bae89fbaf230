"""Release phases (docs/phases.md): parsing, ordering, the DAG's phase-major shape, what a phase run
applies, and undo of a contract refused. No server: the executor runs on an in-memory adapter."""

from __future__ import annotations

import json
import pathlib
import textwrap
from contextlib import contextmanager

import pytest

from polymigrate.adapters.base import Adapter, Applied, Capabilities
from polymigrate.blueprint import ALL_SUCCESS, NONE_FAILED, compile_project
from polymigrate.catalog import discover, discover_domain, in_phase
from polymigrate.errors import PermanentError
from polymigrate.executor import migrate, undo_to
from polymigrate.ledger import LedgerEntry, RunContext, Status


def write(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def problems(tmp_path, technology: str, files: dict[str, str]) -> list[str]:
    for name, text in files.items():
        write(tmp_path / technology / name, text)
    return [str(p) for p in discover("shop", technology, tmp_path / technology).problems]


# --- parsing -----------------------------------------------------------------------------------------

def test_phase_from_sql_lua_py_js_headers_and_json(tmp_path):
    write(tmp_path / "pg/V1__a.sql", "-- polymigrate: phase=expand\nALTER TABLE t ADD COLUMN c int;\n")
    write(tmp_path / "pg/V2__b.sql", "-- polymigrate: phase=MIGRATE, transactional=false\nUPDATE t SET c = 1;\n")
    write(tmp_path / "pg/V3__c.sql", "-- polymigrate: phase=contract\nSELECT 1;\n")
    cat = discover("shop", "postgresql", tmp_path / "pg")
    assert cat.problems == []
    assert [(m.script, m.phase, m.declares_phase) for m in cat.applicable("postgresql")] == [
        ("V1__a.sql", "expand", True), ("V2__b.sql", "migrate", True), ("V3__c.sql", "contract", True)]
    write(tmp_path / "mongo/1-a.py", "# polymigrate: phase=migrate\ndef up(db, ctx):\n    pass\n")
    write(tmp_path / "mongo/2-b.json", json.dumps({"phase": "contract", "commands": [{"drop": "old"}]}))
    write(tmp_path / "mongo/3-c.js", "// polymigrate: phase=contract\nmodule.exports = {async up(db) {}};\n")
    mongo = discover("shop", "mongodb", tmp_path / "mongo")
    assert mongo.problems == []
    assert [m.phase for m in mongo.applicable("mongodb")] == ["migrate", "contract", "contract"]
    write(tmp_path / "redis/1-a.lua", "-- polymigrate: phase=expand\nreturn 1\n")
    assert discover("shop", "redis", tmp_path / "redis").applicable("redis")[0].phase == "expand"
    write(tmp_path / "es/1-a.json", json.dumps({"phase": "migrate", "steps": [{"method": "GET", "path": "/"}]}))
    assert discover("shop", "elasticsearch", tmp_path / "es").applicable("elasticsearch")[0].phase == "migrate"


def test_a_file_without_a_phase_is_expand_and_a_domain_without_phases_is_not_phased(tmp_path):
    write(tmp_path / "pg/V1__a.sql", "SELECT 1;\n")
    cat = discover("shop", "postgresql", tmp_path / "pg")
    assert cat.applicable("postgresql")[0].phase == "expand" and not cat.phased


@pytest.mark.parametrize("technology,name,text,message", [
    ("postgresql", "V1__a.sql", "-- polymigrate: phase=cleanup\nSELECT 1;\n", "unknown phase 'cleanup'"),
    ("mongodb", "1-a.json", '{"phase": "later", "commands": [{"drop": "x"}]}', "phase"),
    ("elasticsearch", "1-a.json", '{"phase": "soon", "steps": [{"method": "GET", "path": "/"}]}', "phase"),
])
def test_an_unknown_phase_names_the_file(tmp_path, technology, name, text, message):
    found = problems(tmp_path, technology, {name: text})
    assert found and name in found[0] and message in found[0], found


def test_versions_may_not_go_back_to_an_earlier_phase(tmp_path):
    found = problems(tmp_path, "postgresql", {
        "V1__a.sql": "-- polymigrate: phase=expand\nSELECT 1;\n",
        "V2__b.sql": "-- polymigrate: phase=contract\nSELECT 1;\n",
        "V3__c.sql": "-- polymigrate: phase=migrate\nSELECT 1;\n",
        "V4__d.sql": "SELECT 1;\n",  # no phase: expand, after a contract
    })
    assert len(found) == 2
    assert "V3__c.sql" in found[0] and "phase migrate but comes after version 2 (V2__b.sql) in phase contract" in found[0]
    assert "V4__d.sql" in found[1] and "phase expand" in found[1]


def test_in_phase():
    class M:
        def __init__(self, phase):
            self.phase = phase
    assert in_phase(M("expand"), "migrate") and in_phase(M("migrate"), "migrate")
    assert not in_phase(M("contract"), "migrate") and in_phase(M("contract"), None)


# --- the DAG -----------------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    write(tmp_path / "environments/prod.yaml", """
        regions: {r1: {}, r2: {}}
        policy:
          rollout: {strategy: sequential, halt_on_failure: true}
          contract_soak_minutes: 30
    """)
    write(tmp_path / "shop/domain.yaml", """
        technologies:
          postgresql: {phases: [expand, migrate, contract]}
          mongodb: {phases: [migrate]}
          elasticsearch: {phases: [migrate]}
          redis: {}   # declares none: expand
    """)
    write(tmp_path / "shop/postgresql/V1__add_full_name.sql", "-- polymigrate: phase=expand\nALTER TABLE u ADD COLUMN f text;\n")
    write(tmp_path / "shop/postgresql/V2__backfill.sql", "-- polymigrate: phase=migrate, backfill=true\nUPDATE u SET f = a || b;\n")
    write(tmp_path / "shop/postgresql/V3__drop_old.sql", "-- polymigrate: phase=contract\nALTER TABLE u DROP COLUMN a;\n")
    write(tmp_path / "shop/mongodb/1-transform.py", "# polymigrate: phase=migrate\ndef up(db, ctx):\n    pass\n")
    write(tmp_path / "shop/elasticsearch/1-v2.json", json.dumps({"phase": "migrate", "steps": [{"method": "GET", "path": "/"}]}))
    write(tmp_path / "shop/redis/1-keys.lua", "return 1\n")
    write(tmp_path / "plain/domain.yaml", "technologies: {postgresql: {}, redis: {}}\n")
    write(tmp_path / "plain/postgresql/V1__a.sql", "SELECT 1;\n")
    write(tmp_path / "plain/redis/1-a.lua", "return 1\n")
    return tmp_path


def test_the_dag_runs_phase_major_across_technologies(tree):
    bp = {b.domain: b for b in compile_project(tree)}["shop"]
    region = [t for t in bp.tasks if t.group == "r1"]
    assert [t.task_id for t in region] == [
        "expand_postgresql", "expand_redis", "migrate_postgresql", "migrate_mongodb", "migrate_elasticsearch",
        "verify_before_contract", "contract_postgresql", "verify"]
    chain = [t.full_id for t in region]
    for before, after in zip(chain, chain[1:]):
        assert bp.task(after).upstream == (before,)
    assert bp.task("r1.expand_postgresql").upstream == ("plan",)
    assert bp.task("r2.expand_postgresql").upstream == ("r1.verify",)  # rollout unchanged
    assert bp.task("r1.migrate_mongodb").arguments["phase"] == "migrate"
    gate = bp.task("r1.verify_before_contract")
    assert gate.arguments["phase"] == "migrate" and set(gate.arguments["technologies"]) == {
        "postgresql", "mongodb", "elasticsearch", "redis"}
    # contract only when the gate succeeded: never after a failed or skipped verify
    assert bp.task("r1.contract_postgresql").trigger_rule == ALL_SUCCESS
    assert bp.task("r1.migrate_postgresql").trigger_rule == NONE_FAILED
    assert "expand (postgresql, redis) → migrate (postgresql, mongodb, elasticsearch) → contract (postgresql)" in bp.doc_md
    assert "30 min of soak" in bp.doc_md


def test_with_contract_approval_each_region_asks_between_the_verify_and_its_contract(tree):
    env = tree / "environments/prod.yaml"
    env.write_text(env.read_text() + "  contract_approval: true\n")
    bp = {b.domain: b for b in compile_project(tree)}["shop"]
    for region in ("r1", "r2"):
        ask = bp.task(f"{region}.approve_contract")
        assert ask.operator == "polymigrate_airflow.approval.ApproveContractOperator"
        assert ask.upstream == (f"{region}.verify_before_contract",) and ask.trigger_rule == ALL_SUCCESS
        assert ask.arguments["region"] == region and ask.retries == 0
        assert bp.task(f"{region}.contract_postgresql").upstream == (ask.full_id,)
    assert "and a separate approval in each region (task `approve_contract`" in bp.doc_md
    plain = {b.domain: b for b in compile_project(tree)}["plain"]
    assert not [t for t in plain.tasks if t.task_id == "approve_contract"]  # nothing to contract, nothing to ask


def test_a_domain_without_phases_keeps_one_block_per_technology(tree):
    bp = {b.domain: b for b in compile_project(tree)}["plain"]
    assert [t.task_id for t in bp.tasks if t.group == "r1"] == ["postgresql", "redis", "verify"]
    assert "phase" not in bp.task("r1.postgresql").arguments
    assert "none declared" in bp.doc_md


def spec_problems(root: pathlib.Path, domain: str) -> list[str]:
    """What validate says of a domain's files (every command loads them through ``discover_domain``)."""
    from polymigrate.spec import load_project
    return [str(p) for p in discover_domain(load_project(root).domains[domain]).problems]


def test_the_dag_follows_the_phases_domain_yaml_declares_not_the_files(tree):
    """Issue 24: parse reads no migration file, so the shape is the spec's. A file whose phase the
    spec does not declare never silently gets no task of its phase: validate refuses it (below)."""
    write(tree / "shop/domain.yaml", """
        technologies:
          postgresql: {phases: [contract, expand, migrate]}   # any order: the release's
          mongodb: {phases: [migrate, contract]}              # contract declared before its file exists
          elasticsearch: {phases: [migrate]}
          redis: {}
    """)
    bp = {b.domain: b for b in compile_project(tree)}["shop"]
    assert [t.task_id for t in bp.tasks if t.group == "r1"] == [
        "expand_postgresql", "expand_redis", "migrate_postgresql", "migrate_mongodb", "migrate_elasticsearch",
        "verify_before_contract", "contract_postgresql", "contract_mongodb", "verify"]
    assert spec_problems(tree, "shop") == []  # a declared phase without files is a task with nothing to do


def test_a_file_in_a_phase_domain_yaml_does_not_declare_fails_validate_naming_the_file_and_the_fix(tree):
    write(tree / "shop/redis/2-drop-old-keys.lua", "-- drop what the old application read\n"
                                                    "-- polymigrate: phase=contract\nreturn 1\n")
    write(tree / "shop/mongodb/0.5-index.json", json.dumps({"commands": [{"createIndexes": "x", "indexes": []}]}))
    found = spec_problems(tree, "shop")
    assert len(found) == 2, found
    redis = next(p for p in found if "2-drop-old-keys.lua" in p)
    assert "2-drop-old-keys.lua:2: declares phase contract" in redis
    assert "technologies.redis declares no phases (so expand only)" in redis
    assert "set technologies.redis.phases: [expand, contract]" in redis and "domain.yaml" in redis
    mongo = next(p for p in found if "0.5-index.json" in p)  # no phase is expand, which mongodb leaves out
    assert "declares no phase (so expand)" in mongo and "technologies.mongodb.phases lists migrate" in mongo
    assert "set technologies.mongodb.phases: [expand, migrate]" in mongo


def test_a_domain_declaring_no_phases_refuses_a_file_that_declares_one(tree):
    write(tree / "plain/postgresql/V2__backfill.sql", "-- polymigrate: phase=migrate\nUPDATE t SET a = 1;\n")
    [problem] = spec_problems(tree, "plain")
    assert "plain/postgresql/V2__backfill.sql:1: declares phase migrate, but" in problem
    assert "declares no release phases" in problem
    assert "under technologies.postgresql: phases: [expand, migrate]" in problem
    # unchanged without any phase: one block per technology, nothing refused
    (tree / "plain/postgresql/V2__backfill.sql").unlink()
    assert spec_problems(tree, "plain") == []


# --- what a phase run applies; undo of a contract ----------------------------------------------------

class MemoryAdapter(Adapter):
    """An in-memory ledger: enough to show what the executor hands the adapter (no engine involved)."""

    technology = "postgresql"
    capabilities = Capabilities(transactional=True, reversible=True, resumable=False)

    def __init__(self):
        super().__init__(None, domain="shop")
        self.rows: list[LedgerEntry] = []
        self.applied: list[str] = []

    @property
    def target(self):
        return "memory"

    @contextmanager
    def lock(self, owner, wait_seconds):
        yield

    def read_ledger(self):
        return list(self.rows)

    def apply(self, migration, body, ctx, resume=None):
        self.applied.append(migration.script)
        self.rows.append(LedgerEntry(installed_rank=len(self.rows) + 1, version=str(migration.version),
                                     description=migration.description, type="SQL", script=migration.script,
                                     checksum=migration.checksum, installed_by="t", execution_time=0, success=True,
                                     status=Status.SUCCESS, domain="shop"))
        return Applied(0)

    def undo(self, undo_migration, body, ctx):
        self.applied.append("undo " + undo_migration.script)
        return Applied(0)

    def snapshot(self):
        return {}


def test_a_phase_run_applies_that_phase_and_earlier_ones_only(tree):
    cat = discover("shop", "postgresql", tree / "shop/postgresql")
    a = MemoryAdapter()
    ctx = RunContext(domain="shop", actor="t")
    migrate(a, cat.applicable("postgresql"), ctx, phase="expand")
    assert a.applied == ["V1__add_full_name.sql"]
    migrate(a, cat.applicable("postgresql"), ctx, phase="migrate")
    assert a.applied == ["V1__add_full_name.sql", "V2__backfill.sql"]
    migrate(a, cat.applicable("postgresql"), ctx, phase="contract")
    assert a.applied[-1] == "V3__drop_old.sql"


def test_undo_of_a_contract_phase_migration_is_refused_with_the_reason(tree):
    write(tree / "shop/postgresql/U3__drop_old.sql", "ALTER TABLE u ADD COLUMN a text;\n")
    write(tree / "shop/postgresql/U2__backfill.sql", "SELECT 1;\n")
    cat = discover("shop", "postgresql", tree / "shop/postgresql")
    a = MemoryAdapter()
    ctx = RunContext(domain="shop", actor="t")
    migrate(a, cat.applicable("postgresql"), ctx)
    with pytest.raises(PermanentError, match="V3__drop_old.sql: version 3 is a contract-phase migration") as exc:
        undo_to(a, cat.migrations["postgresql"], ctx, "1")
    assert "nothing was changed" in str(exc.value) and "write a new expand migration" in str(exc.value)
    assert not any(s.startswith("undo") for s in a.applied)


def test_only_the_top_level_phase_key_of_a_json_file_counts(tmp_path):
    write(tmp_path / "mongo/1-a.json", json.dumps({"commands": [{"update": "jobs", "updates": [
        {"q": {"phase": "contract"}, "u": {"$set": {"phase": "expand"}}}]}]}))
    [m] = discover("shop", "mongodb", tmp_path / "mongo").applicable("mongodb")
    assert m.phase == "expand" and not m.declares_phase


def test_an_unknown_phase_in_domain_yaml_breaks_the_domain_naming_the_key(tree):
    from polymigrate.spec import load_project

    write(tree / "shop/domain.yaml", "technologies:\n  postgresql: {phases: [expand, cleanup]}\n")
    found = [str(p) for p in load_project(tree).broken_domains["shop"]]
    assert any("shop/domain.yaml" in p and "phases" in p and "cleanup" in p for p in found), found
