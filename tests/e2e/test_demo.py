"""`make demo` end to end: embedded PostgreSQL and Redis, airflow standalone, REST trigger, clean stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _airflow_pids() -> set[str]:
    return set(subprocess.run(["pgrep", "-f", "bin/airflow"], capture_output=True, text=True).stdout.split())


def test_demo_once_runs_common_then_social_commerce_and_stops_cleanly(tmp_path):
    before = _airflow_pids()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["POLYMIGRATE_DEMO_DIR"] = str(tmp_path / "demo")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--once"], env=env,
                         capture_output=True, text=True, timeout=900)
    text = out.stdout
    assert out.returncode == 0, text + out.stderr[-3000:]
    assert "migrate__common__development: SUCCESS" in text
    assert "migrate__social_commerce__development: SUCCESS" in text
    assert text.index("migrate__common__development: SUCCESS") < text.index("migrate__social_commerce__development: SUCCESS")
    assert "western_europe.redis             success" in text and "north_africa.postgresql          success" in text
    assert "Airflow UI: http://127.0.0.1:" in text and "login: admin / " in text
    assert "[demo] stopped" in text
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "demo")], capture_output=True, text=True).stdout.split()
    assert leftovers == [], f"processes still running from the demo: {leftovers}"
    # LocalExecutor workers and the triggerer do not carry the demo dir in their command line
    assert _airflow_pids() - before == set(), "Airflow processes outlived the demo"
