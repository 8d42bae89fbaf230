"""What polymigrate's Airflow plugin costs the processes that load it (issue 24). Every task process
loads every plugin (its template context integrates the plugins' macros), and so does each DAG parse
(the rehearsal timetable), so the plugin builds its audit app only when the API server reads
``fastapi_apps``: building it imports FastAPI and Airflow's API stack, 1.7 s of CPU per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def loaded(code: str) -> dict:
    """What a fresh Airflow process reports (the e2e home, set in conftest) after ``code``."""
    out = subprocess.run([sys.executable, "-c", "import json, sys\n" + code], capture_output=True, text=True,
                         env=os.environ.copy(), timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_task_process_loads_the_plugin_without_building_the_audit_app():
    seen = loaded("from airflow.sdk.plugins_manager import _get_plugins, integrate_macros_plugins\n"
                  "integrate_macros_plugins()\n"
                  "print(json.dumps({'plugins': [p.name for p in _get_plugins()[0]],\n"
                  "                  'audit app': 'polymigrate_airflow.ui.app' in sys.modules}))")
    assert "polymigrate" in seen["plugins"] and seen["audit app"] is False


def test_the_api_server_still_mounts_the_audit_page_and_the_timetable_is_registered():
    seen = loaded("from airflow.plugins_manager import get_fastapi_plugins, get_timetables_plugins\n"
                  "print(json.dumps({'mounted': [a['url_prefix'] for a in get_fastapi_plugins()[0]],\n"
                  "                  'timetables': sorted(get_timetables_plugins())}))")
    assert "/polymigrate" in seen["mounted"]
    assert "polymigrate_airflow.timetables.RehearsalTimetable" in seen["timetables"]
