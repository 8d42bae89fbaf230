"""What the e2e tests share (issue 25, item 3): helpers every test module used to define for itself.

Fixtures stay in conftest.py; plain helpers live here, imported by name, so a test module never
imports another test module for them.
"""

from __future__ import annotations

import itertools
import json
import signal
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from scripts.airflow_local import Client

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots a reviewer can look at after a run


def write(path: Path, text: str) -> None:
    """A spec or migration file, its folders made, the test's indented text dedented."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


PG_DOMAIN = "technologies: {postgresql: {}}\n"
# A release whose second file names a table that does not exist (orderz): PostgreSQL refuses it in
# every region, a permanent error, while the first file applies.
TYPO_RELEASE = {
    "V1__orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY);\n",
    "V2__order_lines.sql": "CREATE TABLE order_lines (id bigint PRIMARY KEY, order_id bigint REFERENCES orderz (id));\n",
}


def shop_specs(specs: Path, environments: dict[str, str], migrations: dict[str, str], *,
               domain: str = PG_DOMAIN) -> Path:
    """The spec tree most e2e tests release: ``environments`` (name -> YAML), the ``shop`` domain
    (``domain.yaml``) and its PostgreSQL files (name -> SQL); each text dedented as ``write`` does."""
    for name, text in environments.items():
        write(specs / "environments" / f"{name}.yaml", text)
    write(specs / "shop" / "domain.yaml", domain)
    for name, sql in migrations.items():
        write(specs / "shop" / "postgresql" / name, sql)
    return specs


def one_region_environment(specs: Path, name: str, **policy) -> None:
    """``environments/<name>.yaml``: one region, r1, that runs without approvals or retries, and the
    rest of its policy from ``policy`` (key -> value, as in the file)."""
    import yaml

    write(specs / "environments" / f"{name}.yaml", yaml.safe_dump(
        {"policy": {"approvals": {"required": 0}, "retries": 0, **policy}, "regions": {"r1": {}}}, sort_keys=False))


def audit_store(monkeypatch, url: str):
    """The audit store at ``url``, its schema made, as the tasks of this process find it
    (AIRFLOW_CONN_POLYMIGRATE_AUDIT); the test closes it."""
    from polymigrate.audit import PostgresAuditStore

    monkeypatch.setenv("AIRFLOW_CONN_POLYMIGRATE_AUDIT", url)
    store = PostgresAuditStore(url)
    store.ensure_schema()
    return store


def smtp_connection(port: int, **extra) -> str:
    """Airflow's ``smtp_default`` connection (JSON) for the plain SMTP server on loopback at ``port``."""
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                       "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "polymigrate@example.com",
                                 **extra}})


class TaskInstance(SimpleNamespace):
    """What an operator reads from its task instance when a test calls ``execute`` itself: who it is
    and its upstream XComs."""

    def xcom_pull(self, task_ids: str):
        return self.xcoms.get(task_ids)


def task_context(dag_id: str, task: str, run_id: str, params: dict, xcoms: dict | None = None, *,
                 triggered_by: str | None, run_type) -> dict:
    """The context Airflow passes to ``execute`` for try 1 of ``task`` in run ``run_id``."""
    ti = TaskInstance(task_id=task, dag_id=dag_id, try_number=1, xcoms=xcoms or {})
    return {"ti": ti, "task_instance": ti, "run_id": run_id, "params": params,
            "dag_run": SimpleNamespace(triggering_user_name=triggered_by, run_type=run_type)}


class People(Client):
    """Airflow's public REST API as the people of a test call it, each with a token of their own
    (``airflow_local.Client``'s requests and DAG runs, one token per person), and the wait for an
    approval request that Airflow 3.3.2 needs (``settle_request``).

    ``log`` is where the scheduler writes (the standalone's log, or a cluster's scheduler.log); with
    ``proc`` a wait stops as soon as that process exits. ``reader`` reads states for the checks.
    """

    reader = "admin"
    timeout = 120.0          # seconds one request may take (a busy 2-core machine)
    default_timeout = 180.0  # a wait's timeout when the test gives none
    settle_timeout = 180.0   # how long the scheduler may take to settle a parked approval

    def __init__(self, base: str, passwords: dict[str, str], log: Path, *, proc=None, interval: float = 1.0):
        super().__init__(base, proc=proc, log=log, interval=interval)
        self.passwords = passwords
        self.tokens: dict[str, str] = {}
        self.parks: dict[tuple[str, str, str], int] = {}

    def token_for(self, user: str | None) -> str | None:
        if user not in self.tokens:
            self.tokens[user] = self.fetch_token(user, self.passwords[user])
        return self.tokens[user]

    def get_json(self, path: str):
        """What the reader GETs at ``path``, which must answer 200."""
        r = self.call(self.reader, "GET", path)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def hitl_detail(self, dag: str, run: str, task: str = "approve") -> dict:
        return self.call(self.reader, "GET", f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails").json()

    def answer_request(self, user: str, dag: str, run: str, option: str, comment: str | None = None,
                       task: str = "approve"):
        """``user``'s answer to the request ``task`` waits on, as the UI's Required Actions sends it."""
        body = {"chosen_options": [option], **({"params_input": {"comment": comment}} if comment else {})}
        return self.call(user, "PATCH", f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails", body)

    def approve_in_turn(self, dag: str, run: str, people: list[str], task: str = "approve", before_answer=None) -> None:
        """Each of ``people`` in turn approves the request once it is open and settled (``before_answer``
        runs just before each answer)."""
        for user in people:
            self.settle_request(dag, run, f"the {task} request for {user}", task)
            if before_answer:
                before_answer()
            r = self.answer_request(user, dag, run, "Approve", f"reviewed by {user}", task)
            assert r.status_code == 200, (user, r.status_code, r.text)

    def awaiting_input(self, dag: str, run: str, task: str = "approve") -> bool:
        """The task is parked for an answer, and its previous answer (if any) was cleared."""
        r = self.call(self.reader, "GET", f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}")
        state = r.json().get("state") if r.status_code == 200 else None
        return state == "awaiting_input" and not self.hitl_detail(dag, run, task).get("response_received")

    def settle_request(self, dag: str, run: str, what: str, task: str = "approve") -> None:
        """Wait until the request is open and the scheduler has settled the try that opened it.

        Airflow 3.3.2 race: the worker that parked the task reports "success" for the same try a moment
        later; if an answer has already re-queued the task when the scheduler reads that report, the
        report removes the re-queued work and the task fails as "state changed externally" (or the
        answer is lost). People take longer than the scheduler, a test does not: wait for the report.
        """
        self.wait(what, lambda: self.awaiting_input(dag, run, task))
        key = (dag, run, task)
        self.parks[key] = self.parks.get(key, 0) + 1
        mark = (f"Received executor event with state success for task instance TaskInstanceKey(dag_id='{dag}', "
                f"task_id='{task}', run_id='{run}'")
        self.wait(f"the scheduler to settle the parked {task} task ({what})",
                  lambda: self.log.read_text(errors="replace").count(mark) >= self.parks[key], self.settle_timeout)


class DagPeople(People):
    """``People`` on one DAG of a ``Standalone``: trigger, task states, the approval request, answers."""

    def __init__(self, airflow: Standalone, dag: str, reader: str):
        super().__init__(airflow.base, airflow.users, airflow.log, proc=airflow.proc)
        self.dag, self.reader = dag, reader

    def trigger(self, user: str) -> str:
        return self.start_run(user, self.dag)

    def ti(self, run: str, task: str) -> dict:
        r = self.call(self.reader, "GET", f"/api/v2/dags/{self.dag}/dagRuns/{run}/taskInstances/{task}")
        return r.json() if r.status_code == 200 else {}

    def hitl(self, run: str) -> dict:
        return self.hitl_detail(self.dag, run)

    def answer(self, user: str, run: str, option: str, comment: str | None = None):
        return self.answer_request(user, self.dag, run, option, comment)

    def wait_for_request(self, run: str, what: str) -> None:
        self.settle_request(self.dag, run, what)

    def run_state(self, run: str) -> str | None:
        return self.ended_state(self.dag, run)

    def runs_ended(self) -> bool:
        """No run of the DAG is queued or running (a DAG runs one at a time: max_active_runs=1)."""
        r = self.call(self.reader, "GET", f"/api/v2/dags/{self.dag}/dagRuns?state=queued&state=running")
        return r.status_code == 200 and r.json()["total_entries"] == 0

    def xcom(self, run: str, task: str):
        r = self.call(self.reader, "GET", f"/api/v2/dags/{self.dag}/dagRuns/{run}/taskInstances/{task}/xcomEntries/return_value")
        return r.json().get("value") if r.status_code == 200 else None


class Standalone:
    """One ``airflow standalone`` on a free port, its home and log under ``tmp``, for a ``with`` block.

    ``metadata`` is the PostgreSQL database Airflow keeps its state in (a plain ``postgresql://`` URL),
    ``users`` name -> password, ``extra`` the connections and POLYMIGRATE_* settings. Entering starts
    it and waits for its API; leaving stops its whole process group and waits for the port to close.
    """

    def __init__(self, tmp: Path, *, metadata: str, users: dict[str, str], extra: dict[str, str],
                 timeout: float = 300):
        from scripts import airflow_local as local

        self.env = local.airflow_env(tmp / "airflow", local.free_port(), dags_folder=ROOT / "dags",
                                     metadata_url=metadata.replace("postgresql://", "postgresql+psycopg2://"),
                                     users=users, extra=extra)
        self.base, self.users, self.timeout = self.env["AIRFLOW__API__BASE_URL"], users, timeout
        self.log = tmp / "standalone.log"
        self.proc = None

    def __enter__(self) -> Standalone:
        from scripts import airflow_local as local

        self.proc = local.start([local.AIRFLOW, "standalone"], self.env, self.log)
        try:
            local.wait_healthy(self.base, self.timeout, proc=self.proc, log=self.log)
        except BaseException:
            self.__exit__()
            raise
        return self

    # The test is over: nothing it ran needs to finish. SIGTERM lets each component end its database
    # sessions; after 5 s what is left is killed (the API server took ~10 s of every teardown).
    QUICK_STOP = ((signal.SIGTERM, 5), (signal.SIGKILL, 5))

    def __exit__(self, *exc) -> None:
        from scripts import airflow_local as local

        local.stop(self.proc, self.QUICK_STOP, port=int(self.env["AIRFLOW__API__PORT"]))


class ApiServer:
    """A lone ``airflow api-server`` (no scheduler: nothing runs, pages only read) in ``tmp``, its
    metadata in SQLite and its DAGs folder empty, for a ``with`` block. Made ready (``db migrate``)
    on creation, so a test may set up users in ``env`` before entering starts it; leaving stops it.

    ``users`` name -> password for the simple auth manager, ``extra`` the auth manager and connections.
    """

    # Neither the API server nor a browser has running tasks to let finish, unlike standalone.
    QUICK_STOP = ((signal.SIGINT, 15), (signal.SIGKILL, 5))

    def __init__(self, tmp: Path, *, extra: dict[str, str], users: dict[str, str] | None = None):
        import subprocess

        from scripts import airflow_local as local

        home = tmp / "airflow"
        (home / "dags").mkdir(parents=True)
        self.env = local.airflow_env(home, local.free_port(), dags_folder=home / "dags",
                                     metadata_url=f"sqlite:///{home / 'airflow.db'}", users=users, extra=extra)
        self.base, self.log, self.proc = self.env["AIRFLOW__API__BASE_URL"], tmp / "api-server.log", None
        subprocess.run([str(local.AIRFLOW), "db", "migrate"], env=self.env, check=True, capture_output=True, timeout=240)

    def __enter__(self) -> ApiServer:
        from scripts import airflow_local as local

        self.proc = local.start([local.AIRFLOW, "api-server"], self.env, self.log)  # host, port, workers: from env
        try:
            local.wait_healthy(self.base, 180, proc=self.proc, log=self.log, interval=0.3)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        from scripts import airflow_local as local

        local.stop(self.proc, self.QUICK_STOP)


def ledger(url: str) -> list[tuple[str, str, str]]:
    """A PostgreSQL target's versioned ledger rows: (version, script, status), in the order applied."""
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            return [tuple(r) for r in conn.execute(
                "SELECT version, script, status FROM polymigrate.schema_history WHERE version IS NOT NULL "
                "ORDER BY installed_rank")]
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return []


def audit_events(url: str, run_id: str) -> list:
    """What the audit store holds for one DAG run, oldest first."""
    from polymigrate.audit import PostgresAuditStore

    store = PostgresAuditStore(url)
    try:
        return [r.event for r in store.query(run_id=run_id)]
    finally:
        store.close()


class DevTools:
    """The few Chrome DevTools protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 * 2**20)
        self.ids = itertools.count(1)
        self.events: list[dict] = []

    def call(self, method: str, **params):
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == n:
                if "error" in msg:
                    raise AssertionError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {method} within {timeout}s")
            self.events.append(json.loads(self.ws.recv(timeout=remaining)))

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def navigate(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def wait_for(self, what: str, expression: str, timeout: float = 60):
        """The value of ``expression`` once truthy, evaluated again until then: a wait on the page's
        DOM (a single-page app renders after its load event, from API calls of its own)."""
        from scripts import airflow_local as local

        def check():
            try:
                return self.evaluate(expression)
            except AssertionError as e:
                # a form's submit or the app's own redirect replaced the page under the evaluation
                # (seen after the login form, on a loaded machine): evaluate again in the new page
                if "navigated or closed" in str(e) or "context was destroyed" in str(e):
                    return None
                raise

        return local.wait_until(what, check, timeout, interval=0.3)

    def type_into(self, selector: str, text: str) -> None:
        """``text`` typed into the field as a keyboard would: a React form sees its input events."""
        assert self.evaluate(f"(e => e ? (e.focus(), true) : false)(document.querySelector({json.dumps(selector)}))"), selector
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> None:
        """The whole page as a PNG at ``path``, below the fold included."""
        import base64

        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.ws.close()


def body_of(mail) -> str:
    """The text of the e-mail (HTML, its text in <pre>)."""
    import html

    parts = [mail] if not mail.is_multipart() else [p for p in mail.walk() if not p.is_multipart()]
    return html.unescape("".join(p.get_payload(decode=True).decode() for p in parts))


def lines_of(received: list[str], name: str) -> list[tuple[dict[str, str], str]]:
    """(tags, value|type) of every packet of the metric ``name`` (InfluxDB-style tags)."""
    out = []
    for line in received:
        head, _, value = line.partition(":")
        stat, *tags = head.split(",")
        if stat == f"airflow.{name}":
            out.append((dict(t.split("=", 1) for t in tags), value))
    return out


class Approver(threading.Thread):
    """Answers the ``approve`` task of ``dag_id`` in a ``dag.test()`` run once it waits, through the
    handler of Airflow's ``PATCH …/hitlDetails`` (in this process: ``dag.test()`` has no API server),
    so the answer is checked as the API checks it (a person the request names, an option it offers,
    not answered twice) and resumes the task as the API does; keeps the request text the approver
    was shown. Past ``deadline`` seconds it fails the task instead, so a test that is never asked
    ends rather than hangs."""

    def __init__(self, dag_id: str, user: str, comment: str, deadline: float = 300):
        super().__init__(daemon=True)
        self.dag_id, self.user, self.comment, self.deadline = dag_id, user, comment, deadline
        self.body: str | None = None
        self.assigned: list | None = None
        self.error: BaseException | None = None
        self.stop = threading.Event()

    def run(self):
        try:
            self._answer()
        except BaseException as exc:  # noqa: BLE001  reported by the test, not lost in a thread
            self.error = exc
            self._give_up()

    def _waiting(self, session):
        from sqlalchemy import select

        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.state import TaskInstanceState

        # newest first: a run an earlier test left waiting must not stand in front of this one's
        return session.scalars(select(TaskInstance).where(
            TaskInstance.dag_id == self.dag_id, TaskInstance.task_id == "approve",
            TaskInstance.state == TaskInstanceState.AWAITING_INPUT).order_by(
            TaskInstance.start_date.desc().nulls_last())).all()

    def _answer(self):
        from airflow.api_fastapi.app import create_auth_manager
        from sqlalchemy.exc import OperationalError

        create_auth_manager()  # the handler asks it whether the user may answer
        end = time.monotonic() + self.deadline
        while not self.stop.wait(0.5):
            if time.monotonic() > end:
                self._give_up()
                return
            try:
                if self._answer_once():
                    return
            except OperationalError as exc:
                # dag.test() writes the same SQLite file from the test's own thread: under load this
                # thread can find it locked past SQLite's timeout. The request is still open: ask again.
                if "locked" not in str(exc):
                    raise

    def _answer_once(self) -> bool:
        """Answers the open request, if there is one; True once answered."""
        from sqlalchemy import select

        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
        from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
        from airflow.models.hitl import HITLDetail
        from airflow.utils.session import create_session

        with create_session() as session:
            # the first waiting request nobody answered yet (an answered one may still show its task
            # awaiting input until dag.test()'s loop resumes it)
            ti, detail = next(((ti, d) for ti in self._waiting(session)
                               for d in session.scalars(select(HITLDetail).where(HITLDetail.ti_id == ti.id))
                               if not d.response_received), (None, None))
            if detail is None:
                return False
            body, assigned = detail.body, [u["name"] for u in detail.assignees or []]
            update_hitl_detail(
                dag_id=ti.dag_id, dag_run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index,
                update_hitl_detail_payload=UpdateHITLDetailPayload(
                    chosen_options=["Approve"], params_input={"comment": self.comment}),
                user=SimpleAuthManagerUser(username=self.user, role="admin"), session=session)
        self.body, self.assigned = body, assigned  # kept once the answer is committed
        return True

    def _give_up(self):
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState

        with create_session() as session:
            waiting = self._waiting(session)
            if waiting:
                waiting[0].state = TaskInstanceState.FAILED
                session.add(waiting[0])


@contextmanager
def webhook_receiver():
    """A Slack-compatible incoming webhook on loopback for a ``with`` block: answers 200 "ok", keeps
    each (path, JSON body) in ``posts``; yields (port, posts)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    posts: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            posts.append((self.path, json.loads(body)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], posts
    finally:
        server.shutdown()
