"""`make demo` end to end: embedded PostgreSQL and Redis, airflow standalone, REST trigger, the audit
store filled by the runs, and a clean stop however the demo is stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts import airflow_local as local
from scripts import demo_seed

ROOT = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, str(ROOT / "scripts" / "demo.py")]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _processes_with(marker: str) -> list[int]:
    """PIDs whose environment or command line mentions ``marker``: every process the demo started
    inherits its AIRFLOW_HOME (LocalExecutor workers and the triggerer do not name the demo folder
    on their command line), and pgserver's postgres names its data folder."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() or marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def _no_leftovers(marker: str, timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def _env(demo_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["POLYMIGRATE_DEMO_DIR"] = str(demo_dir)
    return env


def test_demo_once_runs_common_then_social_commerce_fills_the_audit_store_and_stops_cleanly(tmp_path):
    out = subprocess.run([*DEMO, "--once", "--rehearse"], env=_env(tmp_path / "demo"), capture_output=True, text=True,
                         timeout=2400)
    text = out.stdout
    assert out.returncode == 0, text + out.stderr[-3000:]
    assert "migrate__common__development: SUCCESS" in text
    assert "migrate__social_commerce__development: SUCCESS" in text
    assert text.index("migrate__common__development: SUCCESS") < text.index("migrate__social_commerce__development: SUCCESS")
    # social-commerce's full_name release runs phase-major in each region, on every engine make engines
    # starts: OpenSearch serves the people index (blue-green to people_v2 in migrate) in the one target
    # it can serve alone; FerretDB lacks collMod, so the files it cannot run are left out for every DAG
    for task in ("expand_postgresql", "expand_redis", "expand_elasticsearch", "migrate_postgresql", "migrate_mongodb",
                 "migrate_elasticsearch", "migrate_redis", "verify_before_contract", "contract_postgresql",
                 "contract_mongodb", "verify"):
        for region in ("western_europe", "north_africa"):
            if region == "north_africa" and task.endswith("elasticsearch"):
                continue
            assert re.search(rf"{region}\.{task} +success", text), (region, task, text)
    assert "social-commerce: running mongodb without 2 file(s) this server cannot run" in text, text
    assert "collections/4-require-posts-schema-version-2.json: `collMod` is not supported" in text, text
    # issue 22.1: the reasons are in each plan's log (the demo prints the plan's own lines), not only here
    assert "plan skipped mongodb/collections/4-require-posts-schema-version-2.json: left out of these specs: " \
        "`collMod` is not supported" in text, text
    assert "plan skipped elasticsearch in north_africa: region north_africa of development does not serve " \
        "elasticsearch: one OpenSearch server on this machine" in text, text
    # ... and every domain's nightly rehearsal, triggered as the schedule would, succeeds
    for domain in ("common", "social_commerce", "warehousing", "courier_services", "centralized_dashboard"):
        assert f"migrate__{domain}__staging: SUCCESS" in text, (domain, text)
    assert "plan skipped elasticsearch: staging does not serve elasticsearch: one OpenSearch server" in text, text
    # issue 22.5: the approvers the sample policies name exist, with their passwords printed
    for user in ("ann", "bob", "cid"):
        assert re.search(rf"^ +{user} +\S+ +(dba|release_manager)", text, re.M), (user, text)
    assert text.index("western_europe.migrate_postgresql") < text.index("western_europe.verify_before_contract") \
        < text.index("western_europe.contract_postgresql"), text
    assert "Airflow UI: http://127.0.0.1:" in text and "login: admin / " in text
    # issue 22.5: seeded data gives the release's migrate phase work, with progress in the task logs
    # (scripts/demo_seed.py), and the sample domains' expectation suites pass in every phase they are
    # bound to, on seeded (social-commerce) and empty (the other domains' tables) data alike
    for region in ("western_europe", "north_africa"):
        assert f"{region}/postgresql tables/V1.10__backfill_users_full_name.sql: backfill, {demo_seed.USERS:,} rows scanned" \
            in text, text
        assert f"{region}/redis 1-rename-profile-keys.lua: 2,000 keys changed" in text, text
        if "mongodb: using the server" in text or "mongodb: starting" in text:
            assert f"{region}/mongodb transforms/3-posts-author-full-name.py: transform posts-v2, {demo_seed.POSTS} documents" \
                in text, text
    logs = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "demo" / "airflow" / "logs").rglob("*.log"))
    assert re.search(r"backfill users [\d,]+/~[\d,]+ rows \([\d.]+%\).*ETA", logs), "no backfill progress in the logs"
    for env, suites in (("development", ("users", "users_contract", "users_full_name")),
                        ("staging", ("countries", "deliveries", "stock_levels", "users_full_name"))):
        line = next((x for x in text.splitlines() if x.startswith(f"[demo] expectations in {env}: ")), "")
        passed, total = re.search(r": (\d+) of (\d+) checks passed", line).groups() if line else (0, 1)
        assert passed == total and "failed" not in line, (env, line, text)
        assert all(re.search(rf"\b{s}\b", line) for s in suites), (env, line)
    # what it cannot run, it says, with the reason (no adapter yet, or no Go/Java here)
    for tech in ("mongodb", "elasticsearch"):
        assert f"[demo] skipping {tech}: " in text or f"{tech}: using the server" in text or f"{tech}: starting" in text
    # compliance: the runs are in the demo's audit store, and the state it shows is the real one
    audit = next(line for line in text.splitlines() if line.startswith("[demo] audit store"))
    assert "chain intact" in audit and int(audit.split(": ", 1)[1].split()[0]) > 20, audit
    assert any(line.split()[:3] == ["common", "western_europe", "postgresql"] and line.split()[3] == "2.1"
               for line in (row.strip() for row in text.splitlines())), text
    assert "[demo] stopped" in text
    assert _no_leftovers(str(tmp_path / "demo")) == [], "processes still running from the demo"


def _start_in_background(demo_dir: Path, log: Path) -> subprocess.Popen:
    # As `make demo &` does: its own output file, no terminal to press Ctrl-C in.
    with open(log, "w") as f:
        return subprocess.Popen([*DEMO, "--domain", "common"], env=_env(demo_dir), stdout=f, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 900) -> None:
    local.wait_until(f"'{text}' in the demo's output", lambda: text in log.read_text(), timeout, proc=proc, log=log,
                     interval=1)


def test_a_background_demo_stops_everything_on_make_demo_stop_and_after_a_kill_9(tmp_path):
    demo_dir, log = tmp_path / "demo", tmp_path / "demo.out"

    # 1. make demo-stop while a run is going on: the demo gets SIGTERM and stops what it started.
    proc = _start_in_background(demo_dir, log)
    _wait_for(log, "[demo] triggered migrate__common__development", proc)
    stop = subprocess.run([*DEMO, "--stop"], env=_env(demo_dir), capture_output=True, text=True, timeout=300)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert proc.wait(60) == 0
    text = log.read_text()
    assert "SIGTERM received: stopping everything the demo started" in text
    assert text.index("[demo] stopping Airflow") < text.index("[demo] stopping PostgreSQL") < text.index("[demo] stopped")
    assert not (demo_dir / "state.json").exists()
    assert _no_leftovers(str(demo_dir)) == [], "processes still running after make demo-stop"

    # 2. The demo killed outright (kill -9: no chance to clean up): make demo-stop stops what it left.
    proc = _start_in_background(demo_dir, log)
    _wait_for(log, "[demo] airflow standalone starting", proc)
    state = json.loads((demo_dir / "state.json").read_text())
    assert {"airflow", "postgres", "redis"} <= set(state)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert _processes_with(str(demo_dir)), "a kill -9 of the demo alone should leave its servers running"
    stop = subprocess.run([*DEMO, "--stop"], env=_env(demo_dir), capture_output=True, text=True, timeout=300)
    assert stop.returncode == 0 and "[demo] stopped" in stop.stdout, stop.stdout + stop.stderr
    assert _no_leftovers(str(demo_dir)) == [], "processes still running after make demo-stop cleaned a killed demo"
