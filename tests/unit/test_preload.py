"""Tasks inherit polymigrate's imports from the process Airflow forks them from
(``polymigrate_airflow.preload``): a LocalExecutor worker started by a forkserver that preloaded it,
or a Celery worker that imported it before forking its pool."""

from __future__ import annotations

import subprocess
import sys

# As Airflow's scheduler does with [scheduler] mp_start_method=forkserver and mp_forkserver_preload:
# a worker Process from the forkserver, and what a task forked from it finds already imported.
FORKSERVER = """
import multiprocessing, os, sys

def worker(out):
    pid = os.fork()  # the task: Airflow's supervisor forks it from the worker
    if pid == 0:
        found = [m for m in ("great_expectations", "psycopg", "polymigrate.commands", "polymigrate_airflow.operators",
                             "airflow.dag_processing.dagbag", "scipy.stats._stats_py") if m in sys.modules]
        with open(out, "w") as f:
            f.write(repr(sorted(found)))
        os._exit(0)
    os.waitpid(pid, 0)

if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["polymigrate_airflow.preload"])
    p = ctx.Process(target=worker, args=(sys.argv[1],))
    p.start()
    p.join(240)
    print(open(sys.argv[1]).read())
    print("parent has GX:", "great_expectations" in sys.modules)
"""


def test_a_task_forked_from_a_preloaded_worker_finds_gx_the_driver_and_the_operators_imported(tmp_path):
    script = tmp_path / "forkserver_task.py"
    script.write_text(FORKSERVER)
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "found")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    # scipy.stats stays deferred in the preload as in a task that imports GX itself
    assert out.stdout.splitlines() == [
        "['airflow.dag_processing.dagbag', 'great_expectations', 'polymigrate.commands', "
        "'polymigrate_airflow.operators', 'psycopg']", "parent has GX: False"], out.stdout + out.stderr[-2000:]


def test_a_module_that_is_not_installed_is_skipped_and_named_never_raised(monkeypatch):
    from polymigrate_airflow import preload

    monkeypatch.setattr(preload, "MODULES", ("polymigrate_airflow.operators", "airflow.providers.no_such_provider.hooks"))
    assert preload.preload() == ["airflow.providers.no_such_provider.hooks"]


def test_the_celery_workers_import_the_preload_and_keep_airflow_s_celery_settings():
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    from polymigrate_airflow.celery_config import CELERY_CONFIG

    assert CELERY_CONFIG["imports"] == ("polymigrate_airflow.preload",)
    assert {k: v for k, v in CELERY_CONFIG.items() if k != "imports"} == DEFAULT_CELERY_CONFIG


def test_the_demo_and_test_airflows_start_local_executor_workers_from_a_preloaded_forkserver(tmp_path):
    from scripts import airflow_local as local

    env = local.airflow_env(tmp_path, 8080, dags_folder=tmp_path, metadata_url="sqlite://")
    assert env["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    assert env["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"] == "polymigrate_airflow.preload"
