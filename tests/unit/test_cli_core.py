"""The CLI over the spec tree, run as a user runs it: the installed ``polymigrate`` command."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SPECS = Path(__file__).resolve().parents[2] / "migration_specs"
POLYMIGRATE = Path(sys.executable).parent / "polymigrate"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    # no connections: plans are made against empty ledgers; wide lines: paths are not wrapped
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(COLUMNS="400", NO_COLOR="1")
    return subprocess.run([str(POLYMIGRATE), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def specs(tmp_path) -> Path:
    copy = tmp_path / "specs"
    shutil.copytree(SPECS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def break_courier_services(specs: Path) -> None:
    """Two problems in one domain: an unknown key in domain.yaml and a duplicate version (1 and 1.0)."""
    d = specs / "courier-services"
    (d / "domain.yaml").write_text((d / "domain.yaml").read_text() + "owner: someone\n")
    (d / "postgresql/tables/V202401151200.0__duplicate.sql").write_text("SELECT 1;\n")


def test_validate_samples_exits_0():
    r = run("validate", str(SPECS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "5 domains" in r.stdout and "valid" in r.stdout


def test_validate_lists_every_problem_of_the_broken_domain_and_exits_1(specs):
    break_courier_services(specs)
    r = run("validate", str(specs))
    assert r.returncode == 1
    domain_yaml = specs / "courier-services" / "domain.yaml"
    line = domain_yaml.read_text().splitlines().index("owner: someone") + 1
    assert f"{domain_yaml}:{line}: unknown key 'owner'" in r.stderr
    # only the spec error is reported for it: its files are not discovered while domain.yaml is broken
    assert "courier-services" in r.stderr
    usable = r.stdout.split("domains still usable:")[1]
    assert {"common", "social-commerce", "warehousing"} <= set(x.strip() for x in usable.split(","))
    assert "courier-services" not in usable and "centralized-dashboard" not in usable


def test_validate_reports_file_problems_and_dependents(specs):
    (specs / "courier-services/postgresql/tables/V202401151200.0__duplicate.sql").write_text("SELECT 1;\n")
    r = run("validate", str(specs), "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    messages = [p["message"] for p in out["problems"]]
    assert any("duplicate version 202401151200" in m for m in messages)
    assert any("depends_on 'courier-services', whose migrations have problems" in m for m in messages)
    assert out["ok"] is False


def test_plan_still_plans_the_other_domains(specs):
    break_courier_services(specs)
    r = run("plan", "-e", "development", "--specs", str(specs), "--json")
    assert r.returncode == 1  # something was skipped; the plans are still there
    out = json.loads(r.stdout)
    planned = {p["domain"] for p in out["plans"]}
    assert planned == {"common", "social-commerce", "warehousing"}
    assert set(out["broken"]) == {"courier-services", "centralized-dashboard"}
    assert any("unknown key 'owner'" in p for p in out["broken"]["courier-services"])
    social = next(p for p in out["plans"] if p["domain"] == "social-commerce")
    assert {t["region"] for t in social["targets"]} == {"western_europe", "north_africa"}  # development's regions
    pg = next(t for t in social["targets"] if t["technology"] == "postgresql")
    versions = [s["version"] for s in pg["steps"] if s["version"]]
    assert versions.index("1.9") < versions.index("1.10") < versions.index("2")
    assert "not configured" in pg["error"]


def test_plan_of_the_samples_is_clean_and_hash_is_stable():
    first = json.loads(run("plan", "-e", "staging", "--specs", str(SPECS), "--json").stdout)
    again = json.loads(run("plan", "-e", "staging", "--specs", str(SPECS), "--json").stdout)
    assert first["broken"] == {}
    assert [p["hash"] for p in first["plans"]] == [p["hash"] for p in again["plans"]]
    dashboard = next(p for p in first["plans"] if p["domain"] == "centralized-dashboard")
    assert {t["region"] for t in dashboard["targets"]} == {"western_europe"}  # its region subset


def test_plan_rejects_a_bad_target_and_an_unknown_environment():
    r = run("plan", "-e", "development", "--specs", str(SPECS), "--target", "v2")
    assert r.returncode == 2 and "--target: invalid version 'v2'" in r.stderr
    r = run("plan", "-e", "prod", "--specs", str(SPECS))
    assert r.returncode == 2 and "environment 'prod' is not usable" in r.stderr


def test_new_creates_the_next_numbered_files(specs):
    r = run("new", "social-commerce", "postgresql", "Add orders index", "--dir", "indexes", "--specs", str(specs))
    assert r.returncode == 0, r.stderr
    created = specs / "social-commerce/postgresql/indexes/V4__add_orders_index.sql"
    # social-commerce is a phased release ending in contract: a new last file is contract too, so it validates
    assert created.read_text().startswith("-- Add orders index\n-- polymigrate: phase=contract, lock_timeout=5s\n")
    assert "phase contract" in r.stdout
    # the next one sees the file just created
    r = run("new", "social-commerce", "postgresql", "second", "--specs", str(specs))
    assert (specs / "social-commerce/postgresql/V5__second.sql").exists(), r.stderr
    run("new", "social-commerce", "postgresql", "grants", "--repeatable", "--specs", str(specs))
    assert (specs / "social-commerce/postgresql/R__grants.sql").exists()
    run("new", "social-commerce", "postgresql", "second", "--undo", "4", "--specs", str(specs))
    assert (specs / "social-commerce/postgresql/U4__second.sql").exists()
    r = run("new", "warehousing", "elasticsearch", 'say "hi"', "--specs", str(specs))
    es = specs / "warehousing/elasticsearch/5-say-hi.json"
    assert json.loads(es.read_text())["description"] == 'say "hi"'
    r = run("new", "social-commerce", "redis", "warm caches", "--phase", "migrate", "--specs", str(specs))
    assert "-- polymigrate: phase=migrate, batch_size=100\n" in (specs / "social-commerce/redis/5-warm-caches.lua").read_text()
    assert run("new", "social-commerce", "redis", "x", "--phase", "later", "--specs", str(specs)).returncode == 2
    assert run("validate", str(specs), "-d", "social-commerce").returncode == 0
    # a phase domain.yaml does not declare: the DAG would have no task for it, so new says what to declare
    # and validate refuses the file until then
    r = run("new", "social-commerce", "redis", "drop old keys", "--phase", "contract", "--specs", str(specs))
    assert "technologies.redis.phases: [expand, migrate, contract]" in " ".join(r.stdout.split()), r.stdout
    r = run("validate", str(specs), "-d", "social-commerce")
    assert r.returncode == 1 and "6-drop-old-keys.lua" in r.stderr and "declares phase contract" in " ".join(r.stderr.split())


def test_new_keeps_timestamp_versions(specs):
    r = run("new", "courier-services", "postgresql", "add vans", "--specs", str(specs))
    assert r.returncode == 0, r.stderr
    (created,) = [p for p in (specs / "courier-services/postgresql").glob("V*__add_vans.sql")]
    version = created.name[1:].split("__")[0]
    assert len(version) == 12 and int(version) > 202403051600


def test_new_refuses_what_would_land_in_the_wrong_place(specs):
    r = run("new", "warehousing", "redis", "x", "--specs", str(specs))
    assert r.returncode == 2 and "does not declare 'redis'" in r.stderr
    r = run("new", "warehousing", "postgresql", "x", "--dir", "../../outside", "--specs", str(specs))
    assert r.returncode == 2 and not (specs / "outside").exists()
    r = run("new", "warehousing", "postgresql", "../../etc passwd", "--specs", str(specs))
    assert r.returncode == 0 and (specs / "warehousing/postgresql/V6__etc_passwd.sql").exists()
