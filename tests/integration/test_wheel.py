"""The polymigrate wheel, built and installed as the Dockerfile installs it: into a clean virtualenv,
with the extras the Dockerfile names and the committed constraints, then used as users use it.

PyPI must be reachable (pip's cache makes a second run quick). The sources are copied out first so
setuptools' build/ folder never lands in the working tree others commit from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"polymigrate": ROOT / "include" / "polymigrate", "polymigrate_airflow": ROOT / "plugins" / "polymigrate_airflow"}
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def dockerfile_extras() -> str:
    """The extras of the Dockerfile's install line: the test installs exactly what the image does."""
    m = re.search(r'pip install [^\n]*"\$\{wheel\}\[([a-z,]+)\]"', (ROOT / "Dockerfile").read_text())
    assert m, 'Dockerfile: no `pip install … "${wheel}[extras]"` line'
    return m.group(1)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def package_files() -> set[str]:
    """Every file of both packages in the tree (not bytecode), as a wheel names it."""
    out = set()
    for name, folder in PACKAGES.items():
        for path in folder.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                out.add(f"{name}/{path.relative_to(folder).as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for part in ("include", "plugins"):
        shutil.copytree(ROOT / part, src / part, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    started = time.monotonic()
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(src)])
    (built,) = (work / "dist").glob("polymigrate-*.whl")
    print(f"\n[wheel] built {built.name} ({built.stat().st_size / 1024:.0f} KiB) in {time.monotonic() - started:.1f} s")
    return built


def test_wheel_ships_every_file_of_both_packages(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    missing = package_files() - names
    assert not missing, f"the wheel lacks {sorted(missing)} (pyproject.toml [tool.setuptools.package-data])"
    # the package data the tasks read at run time, named so a glob that stopped matching is obvious
    assert any(n.endswith(".js") and n.startswith("polymigrate/") for n in names), "no Node runner in the wheel"
    assert any(n.startswith("polymigrate/templates/") for n in names), "no script templates in the wheel"
    assert "polymigrate_airflow/ui/app.py" in names
    assert "polymigrate_airflow.provider:get_provider_info" in entry_points
    assert "polymigrate_airflow.plugin:PolymigratePlugin" in entry_points


def test_wheel_in_a_clean_virtualenv_validates_and_is_an_airflow_provider(wheel, tmp_path):
    venv = tmp_path / "venv"
    started = time.monotonic()
    # The outer pip installs into the new venv (--python): one modern resolver and one cache for both
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-compile",
         f"{wheel}[{dockerfile_extras()}]", "-c", str(ROOT / "constraints.txt")], timeout=840)
    installed = time.monotonic() - started
    size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"[wheel] clean venv with [{dockerfile_extras()}]: installed in {installed:.0f} s, {size / 2**20:.0f} MiB")

    # Nothing of the source tree may be importable: the venv must run on the wheel alone
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON", "POLYMIGRATE_", "VIRTUAL_ENV"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow"), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    where = run([str(venv / "bin" / "python"), "-c", "import polymigrate, polymigrate_airflow; "
                 "print(polymigrate.__file__, polymigrate_airflow.__file__)"], env=env, cwd=tmp_path).stdout
    assert str(ROOT) not in where and str(venv) in where, where

    validate = run([str(venv / "bin" / "polymigrate"), "validate", str(ROOT / "migration_specs")], env=env, cwd=tmp_path)
    assert "valid" in validate.stdout, validate.stdout

    listed = run([str(venv / "bin" / "airflow"), "providers", "list", "--output", "json"], env=env, cwd=tmp_path)
    import json

    providers = {p["package_name"]: p for p in json.loads(listed.stdout[listed.stdout.index("["):])}
    assert "polymigrate" in providers, sorted(providers)
    assert providers["polymigrate"]["version"] == wheel.name.split("-")[1]
    noise = [line for line in (listed.stderr + listed.stdout).splitlines() if re.search(r"WARNING|ERROR|Traceback", line)]
    assert not noise, "airflow providers list complained:\n" + "\n".join(noise)
    print(f"[wheel] install + validate + providers list: {time.monotonic() - started:.0f} s")
