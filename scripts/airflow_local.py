"""Run Airflow on this machine for the demo and the end-to-end tests (not part of the plugin: nothing
in production supervises Airflow's processes).

``scripts/demo.py`` and the e2e tests start a real ``airflow standalone`` or ``airflow api-server``
in a throwaway AIRFLOW_HOME on free ports, wait for it, talk to its REST API and stop it without
leaving processes behind. This is that code, once.

Standard library only, and never ``import airflow``: Airflow reads its configuration when it is
first imported, and the test session fixes AIRFLOW_HOME before that happens (tests/e2e/conftest.py).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

# The venv's CLI, whichever Airflow (if any) the caller's PATH finds first.
AIRFLOW = Path(sys.executable).with_name("airflow")

# SIGTERM to the whole group, not SIGINT: on SIGINT the LocalExecutor workers carry on (they ignore
# it, to let tasks finish), so the scheduler's exit waits on them and the dag-processor with it;
# measured on 2026-12-06, both were still running 40 s after every SIGINT (the 47-50 s teardowns in
# the e2e tests). On SIGTERM every component exits by itself, the last (the API server) within ~10 s
# on a loaded 2-core machine; what is still there after 20 s gets SIGKILL.
STANDALONE_STOP = ((signal.SIGTERM, 20), (signal.SIGKILL, 5))

# Everything runs on 127.0.0.1: a proxy from the environment must not stand in between.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class NotReady(RuntimeError):
    """What was awaited did not happen: the process exited first, or time ran out."""


class LoginFailed(RuntimeError):
    pass


class RequestFailed(RuntimeError):
    """The API answered a request of a DAG run with an error status."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def airflow_env(home: Path, port: int, *, dags_folder: Path, metadata_url: str,
                users: dict[str, str] | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an Airflow whose API answers on 127.0.0.1:``port`` (its base URL is
    ``env["AIRFLOW__API__BASE_URL"]``).

    ``metadata_url`` is the SQLAlchemy URL as Airflow takes it. ``users`` (name → password) are
    written to ``home/passwords.json`` for the simple auth manager; without them standalone
    generates an ``admin`` password itself. ``extra`` (connections, POLYMIGRATE_*) comes last.
    """
    home.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    # The caller's own AIRFLOW_HOME, AIRFLOW__* and AIRFLOW_CONN_* would override this home's settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",  # low: it shares the machine with the databases it migrates
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__WORKERS": "1",
        # the defaults (8793, 8794) collide with any other Airflow on the machine
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # A fresh API server is slow to answer its first execution-API calls (seen: 8-54 s on a busy
        # 2-core machine). With the 5 s default the worker gives up and retries, the first call
        # starts the task anyway, the retry is refused (400: not queued) and the task fails.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "180",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
        # importing Airflow alone takes 10 s on a loaded 2-core machine: the 50 s default killed
        # the parse of the DAG file (every DAG then missing) while the machine was busy
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "240",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "200",
        "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "15",
        # LocalExecutor's workers start from a forkserver that imported polymigrate, its drivers and
        # GX first (polymigrate_airflow.preload): each task, forked from a worker, inherits them
        # instead of importing them again (GX alone: 2.3-3 s of CPU in every verify task)
        "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
        "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": "polymigrate_airflow.preload",
        # standalone starts its components as `airflow ...` through PATH: they must be the venv's
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    if users is not None:
        passwords = home / "passwords.json"
        passwords.write_text(json.dumps(users))
        # Airflow's role is the same for everyone: who may approve is polymigrate's approvers.yaml.
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = ",".join(f"{user}:admin" for user in users)
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(passwords)
    env.update(extra or {})
    return env


def start(command: list[str | Path], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """``command`` in its own session, stdout and stderr appended to ``log_path``."""
    with open(log_path, "ab") as log:
        # Own session: stop() signals the whole group (standalone forks a scheduler, a triggerer,
        # a dag processor, workers) and a Ctrl-C in the terminal reaches the caller only, which then
        # stops Airflow itself. SIGINT back to default: a caller started in the background inherits
        # it ignored, and SIGINT is how Airflow shuts down cleanly.
        return subprocess.Popen([str(part) for part in command], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop(proc: subprocess.Popen, steps: Iterable[tuple[int, float]] = STANDALONE_STOP, *,
         port: int | None = None) -> None:
    """Each signal of ``steps`` to the process group in turn, until every process of the group has
    exited (the leader alone is not enough: standalone's children outlive it); then SIGKILL to
    whatever is left, and, with ``port``, wait until nothing listens there any more.
    """
    for sig, wait in steps:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        if _group_gone(proc, wait):
            break
    _reap_group(proc.pid)
    proc.poll()
    if port is not None:
        wait_until(f"port {port} to close", lambda: not _listening(port), 10, interval=0.1)


def _group_gone(proc: subprocess.Popen, timeout: float) -> bool:
    """Whether every process of ``proc``'s group has exited within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        proc.poll()  # the leader is our child: reaped here, or it stays in the group as a zombie
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _reap_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, to the processes still in the group (the leader started its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def _log_tail(log: Path | None, chars: int = 3000) -> str:
    if log is None:
        return ""
    try:
        return f"; the end of {log}:\n{log.read_text(errors='replace')[-chars:]}"
    except OSError:
        return f"; no log at {log}"


def wait_until(what: str, check: Callable[[], Any], timeout: float, *, proc: subprocess.Popen | None = None,
               log: Path | None = None, interval: float = 1.0,
               ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """The first truthy ``check()``; an exception in ``ignore`` counts as "not yet".

    Raises NotReady, with the end of ``log``, when ``proc`` exits first or time runs out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            name = " ".join([Path(str(proc.args[0])).name, *map(str, proc.args[1:2])])
            raise NotReady(f"{name} exited ({proc.returncode}) while waiting for {what}{_log_tail(log)}")
        try:
            value = check()
        except ignore:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise NotReady(f"timed out after {timeout:.0f}s waiting for {what}{_log_tail(log)}")


def wait_healthy(base: str, timeout: float, *, proc: subprocess.Popen | None = None, log: Path | None = None,
                 interval: float = 1.0) -> None:
    def healthy() -> bool:
        with _opener.open(f"{base}/api/v2/monitor/health", timeout=5) as resp:
            return resp.status == 200

    # Refused connections, and resets while the server is still binding, until it answers.
    wait_until("the API server", healthy, timeout, proc=proc, log=log, interval=interval,
               ignore=(OSError, http.client.HTTPException))


class Reply:
    """One answer of the API as a caller checks it: ``status_code``, ``text`` and ``json()``."""

    def __init__(self, status_code: int, text: str):
        self.status_code, self.text = status_code, text

    def json(self) -> Any:
        return json.loads(self.text or "null")


class Client:
    """Airflow's REST API with the token of the user it logged in as: JSON in, (status, JSON or error
    text) out. ``send`` is the one request every caller makes, with whichever token it is given (the
    e2e tests' ``People`` keep one per person, through ``token_for``).

    A DAG run as the UI starts and follows one (``unpause``, ``start_run``, ``ended_state``,
    ``task_instances``) is written here once, for the demo and the e2e tests alike. Their waits stop
    as soon as ``proc`` exits, and say what ``log`` ends with.
    """

    timeout = 30.0          # seconds a request may take
    default_timeout = 180.0  # a wait's timeout when the caller gives none
    reader: str | None = None  # whose token reads states (None: the one this client logged in with)

    def __init__(self, base: str, *, proc: subprocess.Popen | None = None, log: Path | None = None,
                 interval: float = 1.0):
        self.base, self.token = base, None
        self.proc, self.log, self.interval = proc, log, interval

    def fetch_token(self, username: str, password: str) -> str:
        reply = self.send("POST", "/auth/token", {"username": username, "password": password})
        if reply.status_code not in (200, 201):
            raise LoginFailed(f"login as {username} failed: HTTP {reply.status_code} {reply.text[:500]}")
        return reply.json()["access_token"]

    def login(self, username: str, password: str) -> None:
        self.token = self.fetch_token(username, password)

    def send(self, method: str, path: str, body: dict | None = None, *, token: str | None = None) -> Reply:
        """One request; an HTTP error status is an answer all the same (the caller decides)."""
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with _opener.open(req, timeout=self.timeout) as resp:
                return Reply(resp.status, resp.read().decode(errors="replace"))
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read().decode(errors="replace"))

    def token_for(self, user: str | None) -> str | None:
        """The token a request as ``user`` carries: here the one of ``login``, whoever is named."""
        return self.token

    def call(self, user: str | None, method: str, path: str, body: dict | None = None) -> Reply:
        """One request as ``user`` (the caller checks its status)."""
        return self.send(method, path, body, token=self.token_for(user))

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, Any]:
        reply = self.send(method, path, body, token=self.token)
        if 200 <= reply.status_code < 300:
            return reply.status_code, reply.json()
        return reply.status_code, reply.text[:500]

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def post(self, path: str, body: dict) -> tuple[int, Any]:
        return self.request("POST", path, body)

    def patch(self, path: str, body: dict) -> tuple[int, Any]:
        return self.request("PATCH", path, body)

    def wait(self, what: str, check: Callable[[], Any], timeout: float | None = None) -> Any:
        """``wait_until`` on this client's process and log; refused connections, timeouts and
        broken answers count as "not yet"."""
        return wait_until(what, check, timeout or self.default_timeout, proc=self.proc, log=self.log,
                          interval=self.interval, ignore=(OSError, http.client.HTTPException))

    # -- a DAG run, as the UI starts and follows one --------------------------------------------------

    def wait_parsed(self, dag: str, timeout: float | None = None) -> None:
        """Until the DAG processor has parsed ``dag`` and the API knows it."""
        self.wait(f"DAG {dag} to be parsed", lambda: self.call(self.reader, "GET", f"/api/v2/dags/{dag}").status_code == 200,
                  timeout)

    def unpause(self, dag: str, timeout: float = 300) -> None:
        """Once the DAG processor has parsed ``dag``: unpaused, as someone would in the UI."""
        self.wait_parsed(dag, timeout)
        self._ok(self.call(self.reader, "PATCH", f"/api/v2/dags/{dag}", {"is_paused": False}), f"unpause {dag}")

    def start_run(self, user: str | None, dag: str, conf: dict | None = None) -> str:
        """A run of ``dag`` triggered by ``user`` with ``conf`` (its run id)."""
        reply = self._ok(self.call(user, "POST", f"/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": conf or {}}),
                         f"trigger {dag}")
        return reply.json()["dag_run_id"]

    def ended_state(self, dag: str, run: str) -> str | None:
        """"success" or "failed" once the run has ended, else None."""
        state = self.call(self.reader, "GET", f"/api/v2/dags/{dag}/dagRuns/{run}").json().get("state")
        return state if state in ("success", "failed") else None

    def task_instances(self, dag: str, run: str) -> dict[str, dict]:
        """The run's task instances by task id (group prefix included)."""
        reply = self._ok(self.call(self.reader, "GET", f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances?limit=200"),
                         f"read the tasks of {dag} {run}")
        return {t["task_id"]: t for t in reply.json()["task_instances"]}

    @staticmethod
    def _ok(reply: Reply, what: str) -> Reply:
        if not 200 <= reply.status_code < 300:
            raise RequestFailed(f"could not {what}: HTTP {reply.status_code} {reply.text[:500]}")
        return reply
