"""Plans: JSON-serialisable, and a hash that moves exactly when what would run moves."""

import json
from pathlib import Path

from polymigrate.catalog import Kind, Migration
from polymigrate.checksums import flyway_checksum, sha256
from polymigrate.ledger import LedgerEntry, Status
from polymigrate.plan import Plan, TargetPlan, changeset_hash
from polymigrate.reconcile import current_version, reconcile
from polymigrate.versions import Version


def mig(version: str | None, text: str, kind: Kind = Kind.VERSIONED, desc: str = "x") -> Migration:
    script = f"V{version}__{desc}.sql" if version else f"R__{desc}.sql"
    return Migration(domain="shop", technology="postgresql", kind=kind, version=Version(version) if version else None,
                     description=desc, script=script, path=Path(script), checksum=flyway_checksum(text),
                     sha256=sha256(text), text=text)


FILES = [mig("1", "CREATE TABLE a (id int);"), mig("2", "CREATE TABLE b (id int);"),
         mig(None, "CREATE OR REPLACE VIEW v AS SELECT 1;", Kind.REPEATABLE, "view")]


def target(region: str, files=FILES, entries=(), tech: str = "postgresql", conn: str | None = None) -> TargetPlan:
    infos = reconcile(list(files), list(entries))
    return TargetPlan.from_infos(region, tech, conn or f"pg_{region}", infos, current_version(infos))


def make_plan(files=FILES, entries=(), regions=("western_europe", "north_africa")) -> Plan:
    return Plan("shop", "staging", [target(r, files, entries) for r in regions])


def test_steps_follow_reconcile():
    applied = LedgerEntry(1, "1", "x", "SQL", "V1__x.sql", FILES[0].checksum)
    t = target("western_europe", entries=[applied])
    assert [(s.version, s.action) for s in t.steps] == [("2", "apply"), (None, "apply")]
    assert t.current_version == "1" and t.states == {"success": 1, "pending": 2}


def test_same_inputs_same_hash():
    assert make_plan().hash == make_plan().hash
    assert len(make_plan().hash) == 64


def test_hash_ignores_target_order_but_not_targets():
    assert make_plan(regions=("a", "b")).hash == make_plan(regions=("b", "a")).hash
    assert make_plan(regions=("a", "b")).hash != make_plan(regions=("a",)).hash
    assert Plan("shop", "staging", [target("a", conn="pg_x")]).hash != Plan("shop", "staging", [target("a", conn="pg_y")]).hash
    assert Plan("shop", "staging", [target("a")]).hash != Plan("shop", "production", [target("a")]).hash


def test_any_checksum_change_changes_the_hash():
    edited = [FILES[0], mig("2", "CREATE TABLE b (id bigint);"), FILES[2]]
    assert make_plan(edited).hash != make_plan().hash
    edited_view = [FILES[0], FILES[1], mig(None, "CREATE OR REPLACE VIEW v AS SELECT 2;", Kind.REPEATABLE, "view")]
    assert make_plan(edited_view).hash != make_plan().hash


def test_hash_moves_when_the_ledger_changes_what_runs():
    applied = [LedgerEntry(1, "1", "x", "SQL", "V1__x.sql", FILES[0].checksum)]
    assert make_plan(entries=applied).hash != make_plan().hash
    resumed = [LedgerEntry(1, "1", "x", "SQL", "V1__x.sql", FILES[0].checksum, status=Status.STARTED, success=False)]
    assert make_plan(entries=resumed).hash != make_plan().hash  # "resume" is not "apply"


def test_json_round_trip_keeps_everything_and_the_hash():
    plan = make_plan()
    plan.targets[1].error = "ledger not read: connection 'pg_north_africa' is not configured"
    text = plan.to_json()
    back = Plan.from_dict(json.loads(text))
    assert back.hash == plan.hash
    assert back.to_dict() == plan.to_dict() == json.loads(text)
    assert back.problems == plan.problems == ["north_africa/postgresql: ledger not read: connection 'pg_north_africa' is not configured"]


def test_problems_and_summary():
    edited = [mig("1", "CREATE TABLE a (id bigint);"), FILES[1]]
    applied = [LedgerEntry(1, "1", "x", "SQL", "V1__x.sql", FILES[0].checksum)]
    plan = make_plan(edited, applied, regions=("western_europe",))
    assert len(plan.problems) == 1 and plan.problems[0].startswith("western_europe/postgresql: V1__x.sql")
    summary = plan.summary()
    assert summary == {"hash": plan.hash, "pending": 1, "problems": 1, "targets": {"western_europe/postgresql": 1},
                       "current": {"western_europe/postgresql": plan.targets[0].current_version}}
    assert len(json.dumps(summary)) < 300  # small enough for an XCom


def test_changeset_hash_binds_file_contents_not_order():
    assert changeset_hash("shop", "production", FILES) == changeset_hash("shop", "production", list(reversed(FILES)))
    crlf = [mig("1", "CREATE TABLE a (id int);\r\n"), *FILES[1:]]
    # the approver saw bytes: a line-ending change is a different change set, although Flyway's CRC is equal
    assert crlf[0].checksum == mig("1", "CREATE TABLE a (id int);\n").checksum
    assert changeset_hash("shop", "production", crlf) != changeset_hash("shop", "production", FILES)
    assert changeset_hash("shop", "production", FILES, ["lint:ban-drop-column"]) != changeset_hash("shop", "production", FILES)
