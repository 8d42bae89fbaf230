"""An audit sink for tests: keeps every event it is given and answers ``query`` as the audit store does,
so a test reads what a run recorded without a store of its own."""

from __future__ import annotations

from polymigrate.audit.store import AuditRecord
from polymigrate.events import AuditEvent


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def emit(self, event: AuditEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]

    def of(self, script: str) -> list[str]:
        """The kinds of the events about ``script``, in order."""
        return [e.kind for e in self.events if e.script == script]

    def query(self, *, domain=None, environment=None, run_id=None, kind=None, **_):
        kinds = [kind] if isinstance(kind, str) else kind
        return [AuditRecord(n, "", e) for n, e in enumerate(self.events, 1)
                if (domain is None or e.domain == domain) and (environment is None or e.environment == environment)
                and (run_id is None or e.run_id == run_id) and (kinds is None or e.kind in kinds)]
