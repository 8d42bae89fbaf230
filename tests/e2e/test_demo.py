"""`make demo` end to end: embedded PostgreSQL and Redis, airflow standalone, REST trigger, clean stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _processes_with(marker: str) -> list[int]:
    """PIDs whose environment mentions ``marker``: every process the demo started inherits its AIRFLOW_HOME,
    whatever its command line (LocalExecutor workers and the triggerer do not name the demo folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def test_demo_once_runs_common_then_social_commerce_and_stops_cleanly(tmp_path):
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
    leftovers = _processes_with(str(tmp_path / "demo"))
    assert leftovers == [], f"processes still running from the demo: {leftovers}"
