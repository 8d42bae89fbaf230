"""What the e2e tests share (issue 25, item 3): helpers every test module used to define for itself.

Fixtures stay in conftest.py; plain helpers live here, imported by name, so a test module never
imports another test module for them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path


def write(path: Path, text: str) -> None:
    """A spec or migration file, its folders made, the test's indented text dedented."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


class People:
    """Airflow's public REST API as the people of a test call it, each with a token of their own, and
    the wait for an approval request that Airflow 3.3.2 needs (``settle_request``).

    ``log`` is where the scheduler writes (the standalone's log, or a cluster's scheduler.log); with
    ``proc`` a wait stops as soon as that process exits. ``reader`` reads states for the checks.
    """

    reader = "admin"
    default_timeout = 180.0  # a wait's timeout when the test gives none
    settle_timeout = 180.0   # how long the scheduler may take to settle a parked approval

    def __init__(self, base: str, passwords: dict[str, str], log: Path, *, proc=None, interval: float = 1.0):
        self.base, self.passwords, self.log, self.proc, self.interval = base, passwords, log, proc, interval
        self.tokens: dict[str, str] = {}
        self.parks: dict[tuple[str, str, str], int] = {}

    def wait(self, what: str, check, timeout: float | None = None):
        import httpx

        from scripts import airflow_local as local

        return local.wait_until(what, check, timeout or self.default_timeout, proc=self.proc, log=self.log,
                                interval=self.interval, ignore=(httpx.HTTPError,))

    def call(self, user: str, method: str, path: str, body=None):
        """One request as ``user`` (an ``httpx.Response``; the caller checks its status)."""
        import httpx

        if user not in self.tokens:
            r = httpx.post(f"{self.base}/auth/token", json={"username": user, "password": self.passwords[user]},
                           timeout=60)
            assert r.status_code in (200, 201), r.text
            self.tokens[user] = r.json()["access_token"]
        return httpx.request(method, f"{self.base}{path}", json=body, timeout=120,
                             headers={"Authorization": f"Bearer {self.tokens[user]}"})

    def hitl_detail(self, dag: str, run: str, task: str = "approve") -> dict:
        return self.call(self.reader, "GET", f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails").json()

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
