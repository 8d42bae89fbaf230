"""The triggerer's side of a plan that waits for the domains it depends on.

A nightly schedule starts every staging rehearsal at the same minute, so a domain's plan can find a
dependency with pending migrations while that dependency's own DAG run is still applying them. The
plan then defers on ``DependencyRunsEnded``: the triggerer asks Airflow every ``poll_interval``
seconds whether those DAGs still have a run queued or running (one execution-API count per DAG, no
worker slot and no task process meanwhile) and resumes the plan as soon as none has. The plan then
runs again from the start and decides afresh: planned, or refused if the dependency's run left
its migrations pending.

Before this, the plan deferred on a clock and resumed every minute to look again: each look was a
task process of its own, and a dependent started up to a minute after its dependency finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

ACTIVE = ["queued", "running"]


class DependencyRunsEnded(BaseTrigger):
    """Fires once none of ``dag_ids`` has a run queued or running."""

    def __init__(self, dag_ids: list[str], poll_interval: float = 10.0):
        super().__init__()
        self.dag_ids, self.poll_interval = list(dag_ids), float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"dag_ids": self.dag_ids,
                                                                      "poll_interval": self.poll_interval}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        count = sync_to_async(RuntimeTaskInstance.get_dr_count)
        said, looks = None, 0
        while True:
            busy = [d for d in self.dag_ids if await count(dag_id=d, states=ACTIVE)]
            if not busy:
                yield TriggerEvent({"ended": self.dag_ids})
                return
            # these lines reach the task's log: one a minute, not one a look
            if busy != said or looks % max(1, round(60 / self.poll_interval)) == 0:
                self.log.info("Still running: %s; looking every %g s", ", ".join(busy), self.poll_interval)
                said = busy
            looks += 1
            await asyncio.sleep(self.poll_interval)
