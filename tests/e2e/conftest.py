"""Whole DAGs through Airflow, in an isolated AIRFLOW_HOME (set before anything imports airflow).

Airflow reads its configuration once per process, so the home, the DAGs folder and the metadata
database (SQLite in a temporary folder) are fixed here at collection time, and ``airflow db
migrate`` runs once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_HOME = Path(tempfile.mkdtemp(prefix="polymigrate-airflow-e2e-"))
os.environ.update({
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
})
for _key in [k for k in os.environ if k.startswith("AIRFLOW_CONN_")]:
    del os.environ[_key]  # "no connection configured" must hold for the DagBag tests


@pytest.fixture(scope="session")
def airflow_db():
    """The metadata database, migrated once per session; ``dag.test()`` passes on failures at once."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    _hurry_dag_test_past_failures()
    return _HOME


def _hurry_dag_test_past_failures() -> None:
    """``dag.test()``'s loop marks a failed task's downstream tasks upstream_failed one level per pass,
    and sleeps 1 s after each pass that found no task to run: a run failing early in a deep DAG
    (social-commerce's phase-major rollout, ~45 levels) spent ~40 s asleep before it ended (measured:
    a plan refused in test_dag_runs took 47 s, of which 35 s in those sleeps). Here a pass after
    "No tasks to run" sleeps 0.05 s; the human-in-the-loop wait (another message) keeps its 1 s, so
    a run waiting for an approver does not poll the database faster."""
    import logging
    import threading
    import time

    import airflow.sdk.definitions.dag as dag_module

    if getattr(time.sleep, "hurried", False):
        return  # a second session in this process
    # dag.test() imports time inside the method: the sleep it calls is time.sleep itself, so that is
    # what is wrapped; it differs only for the one call right after the warning, in the same thread
    flagged, sleep = threading.local(), time.sleep

    def hurried(seconds: float) -> None:
        if getattr(flagged, "on", False):
            flagged.on, seconds = False, min(seconds, 0.05)
        sleep(seconds)
    hurried.hurried = True

    class NoTaskToRun(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if str(record.msg).startswith("No tasks to run"):
                flagged.on = True
            return True

    time.sleep = hurried
    dag_module.log.addFilter(NoTaskToRun())


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/e2e" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


class ModuleDatabases:
    """PostgreSQL databases that live as long as a test module's shared Airflow (its metadata, its
    targets): ``make(prefix)`` creates one, ``recreate(url)`` empties one again between two tests
    (same name: the Airflow's connections keep pointing at it), all dropped at the module's end."""

    def __init__(self):
        self.created: list[str] = []

    def _admin(self, statement: str, name: str) -> None:
        import psycopg
        from psycopg import sql

        from tests.conftest import PG_ADMIN_URL

        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(name)))

    def make(self, prefix: str) -> str:
        import uuid

        from tests.conftest import _pg_url

        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._admin("CREATE DATABASE {}", name)
        self.created.append(name)
        return _pg_url(name)

    def recreate(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)
        self._admin("CREATE DATABASE {}", name)

    def drop_all(self) -> None:
        for name in self.created:
            self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


@pytest.fixture(scope="module")
def module_databases():
    dbs = ModuleDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven over the DevTools protocol: (the page's DevTools, the browser's)."""
    import signal

    import httpx

    from scripts import airflow_local as local
    from tests.conftest import engine_tool
    from tests.e2e.harness import DevTools

    chromium = engine_tool("chromium", env="POLYMIGRATE_CHROMIUM", names=("chromium",), paths=("/usr/bin/chromium",))
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                             "--disable-component-update", "--disable-sync", "--no-first-run",
                             "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"
        port = local.wait_until("chromium", lambda: port_file.exists() and port_file.read_text().split("\n")[0], 30,
                                interval=0.3)
        pages = local.wait_until("a chromium page", lambda: [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                                                             if t["type"] == "page"], 30, interval=0.3)
        tools = DevTools(pages[0]["webSocketDebuggerUrl"])
        browser_ws = httpx.get(f"http://127.0.0.1:{port}/json/version").json()["webSocketDebuggerUrl"]
        top = DevTools(browser_ws)
        yield tools, top
        tools.close()
        top.close()
    finally:
        local.stop(proc, ((signal.SIGINT, 15), (signal.SIGKILL, 5)))


@pytest.fixture
def webhook_server():
    """A Slack-compatible incoming webhook on loopback (``harness.webhook_receiver``): (port, posts)."""
    from tests.e2e.harness import webhook_receiver

    with webhook_receiver() as server:
        yield server


@pytest.fixture
def smtp_server():
    """A real SMTP server on loopback; ``mails`` holds every message it accepted."""
    from email import message_from_bytes

    from aiosmtpd.controller import Controller

    from scripts.airflow_local import free_port

    class Handler:
        mails: list = []

        async def handle_DATA(self, server, session, envelope):
            self.mails.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
            return "250 OK"

    handler = Handler()
    handler.mails = []
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller.port, handler.mails
    controller.stop()


@pytest.fixture
def statsd(monkeypatch):
    """A StatsD server: a UDP socket; Airflow's Stats set up for it as a task runner's main() does."""
    import socket
    import time

    from airflow.sdk._shared.observability.metrics import stats
    from airflow.sdk.observability.metrics.stats_utils import get_stats_factory

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    for key, value in {"STATSD_ON": "True", "STATSD_HOST": "127.0.0.1", "STATSD_PORT": str(sock.getsockname()[1]),
                       "STATSD_PREFIX": "airflow", "STATSD_INFLUXDB_ENABLED": "True"}.items():
        monkeypatch.setenv(f"AIRFLOW__METRICS__{key}", value)
    stats.initialize(factory=get_stats_factory(), export_legacy_names=True)
    received: list[str] = []

    def drain() -> list[str]:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                received.extend(sock.recv(65535).decode().splitlines())
            except socket.timeout:
                if received:
                    break
        return received

    yield drain
    sock.close()
    # as before this test: the next use initialises Stats again from the configuration it then finds
    stats._factory, stats._backend = None, None
