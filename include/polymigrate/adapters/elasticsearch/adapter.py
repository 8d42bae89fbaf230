"""The Elasticsearch / OpenSearch adapter: JSON step files, a ledger index, a lease lock, blue-green.

What it keeps in the target (``ledger``): the hidden index ``.polymigrate-<domain>`` with one
document per ledger row and the lease document ``lock`` (``lease``). Elasticsearch has no
transaction spanning a step and its ledger row, so a migration writes ``started`` before its first
step and, after each step, the row again with what the step did (``progress``: steps done, the
running step's state such as a reindex task id); a retry gets the incomplete row as ``resume`` and
continues from it. Every write to the row and every change to the cluster is preceded by the
lease's fence, and row writes are conditional on the row's sequence number, so a run that lost
its lock writes nothing more.

Which client: given a ready ``elasticsearch.Elasticsearch`` or ``opensearchpy.OpenSearch`` (built
by the Airflow provider hooks) or a ``SearchApi``; ``from_url`` reads the flavour from ``GET /``.
"""

from __future__ import annotations

import getpass
import logging
import time
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from polymigrate.adapters.base import Adapter, Applied, Capabilities, Check, RepairReport, holding
from polymigrate.adapters.elasticsearch.api import SearchApi, SearchError, client_where
from polymigrate.adapters.elasticsearch.bluegreen import BlueGreen, undo_switch
from polymigrate.adapters.elasticsearch.lease import Lease, LeaseLost
from polymigrate.adapters.elasticsearch.snapshot import snapshot
from polymigrate.adapters.elasticsearch.ledger import Ledger, ledger_index
from polymigrate.adapters.elasticsearch.steps import StepContext, classify, run_simple, short
from polymigrate.catalog import Migration
from polymigrate.connections import redact
from polymigrate.errors import MigrationError, PermanentError, TransientError
from polymigrate.ledger import LedgerEntry, RunContext, Status
from polymigrate.adapters.documents import baseline_entry, repair_rows
from polymigrate.recovery import UNTOUCHED, take_new_text
from polymigrate.spec import formats

log = logging.getLogger("polymigrate.elasticsearch")

DEFAULT_LEASE_MS = 30_000
DEFAULT_BATCH_SIZE = 1000
_HINTS = {
    "index_not_found_exception": "create the index in an earlier step or migration, or fix its name",
    "resource_already_exists_exception": "the index exists already; blue_green picks a fresh <alias>_v<N> for you",
    "mapper_parsing_exception": "fix the mapping in the step's body",
    "illegal_argument_exception": "fix the step's body (the server's reason is above)",
    "invalid_index_template_exception": "fix the template's index_patterns or body",
    "x_content_parse_exception": "fix the JSON body of the step: the server could not read it",
}


class ElasticsearchAdapter(Adapter):
    """Adapter for one Elasticsearch 8/9 or OpenSearch 1/2 target."""

    technology = "elasticsearch"
    capabilities = Capabilities(transactional=False, reversible=True, resumable=True)

    def __init__(self, client: Any, *, domain: str, settings: Any = None, lease_ms: int = DEFAULT_LEASE_MS,
                 poll_seconds: float = 2.0, log_every_seconds: float = 10.0):
        super().__init__(client, domain=domain, settings=settings)
        try:
            self.api = client if isinstance(client, SearchApi) else SearchApi(client)
        except SearchError as exc:
            raise classify(exc)(f"search target {client_where(client)} did not answer GET /: {exc}",
                                hint="check the connection's host, port and credentials") from exc
        self.index_prefix = getattr(settings, "index_prefix", None) or ""
        self._reindexed = [0, 0]
        self.ledger = Ledger(self.api, ledger_index(domain, getattr(settings, "ledger", None)))
        self.lease_ms = lease_ms
        self.poll_seconds = poll_seconds
        self.log_every_seconds = log_every_seconds
        self.batch_size = getattr(settings, "batch_size", None) or DEFAULT_BATCH_SIZE
        self._leases: list[Lease] = []

    @classmethod
    def from_url(cls, url: str, *, domain: str, settings: Any = None, **kw: Any) -> "ElasticsearchAdapter":
        """``http(s)://[user:password@]host:9200`` (also ``elasticsearch://``, ``opensearch://``);
        ``?lease_ms=N`` for the lock lease (how long a crashed run blocks the next one),
        ``?poll_seconds=`` / ``?log_every_seconds=`` for watching reindex tasks."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        for key, conv in (("lease_ms", int), ("poll_seconds", float), ("log_every_seconds", float)):
            if key in query:
                kw.setdefault(key, conv(query.pop(key)))
        try:
            api = SearchApi.from_url(urlunsplit(parts._replace(query=urlencode(query))))
        except SearchError as exc:
            raise classify(exc)(f"search target {redact(url)} did not answer GET /: {exc}",
                                hint="check the URL, and that the server runs") from exc
        try:
            return cls(api, domain=domain, settings=settings, **kw)
        except Exception:
            api.close()
            raise

    @property
    def target(self) -> str:
        return f"{self.api.server.label} {self.api.where} {self.ledger.index}"

    # -- lock ------------------------------------------------------------------------------

    def lock(self, owner: str, wait_seconds: float) -> AbstractContextManager[None]:
        self._ensure_ledger()
        lease = Lease(self.api, self.ledger.index, owner, self.lease_ms)
        lease.acquire(wait_seconds, self.target)
        return holding(self._leases, lease)

    def _lease(self) -> Lease | None:
        return self._leases[-1] if self._leases else None

    def _fence(self, what: str) -> None:
        lease = self._lease()
        if lease is not None:
            lease.fence(what)

    # -- ledger ----------------------------------------------------------------------------

    def _ensure_ledger(self) -> None:
        try:
            self.ledger.ensure()
        except SearchError as exc:
            raise classify(exc)(f"{self.target}: cannot create the ledger index: {exc}") from exc

    def read_ledger(self) -> list[LedgerEntry]:
        self._ensure_ledger()
        try:
            return self.ledger.read()
        except SearchError as exc:
            raise classify(exc)(f"{self.target}: cannot read the ledger: {exc}") from exc

    def _write(self, entry: LedgerEntry, *, new: bool = False, what: str = "the ledger row",
               checkpoint: bool = False) -> None:
        self._fence(f"writing {what}")
        self.ledger.write(entry, new=new, checkpoint=checkpoint)

    def _entry(self, migration: Migration, ctx: RunContext, rank: int) -> LedgerEntry:
        return LedgerEntry(
            installed_rank=rank, version=str(migration.version) if migration.version is not None else None,
            description=migration.description, type=migration.ledger_type, script=migration.script,
            checksum=migration.checksum, installed_by=ctx.actor or getpass.getuser(),
            installed_on=datetime.now(timezone.utc), success=False, status=Status.STARTED, domain=self.domain,
            sha256=migration.sha256, run_id=ctx.run_id, environment=ctx.environment, region=ctx.region,
            plan_hash=ctx.plan_hash)

    # -- apply -----------------------------------------------------------------------------

    def apply(self, migration: Migration, body: str, ctx: RunContext, resume: LedgerEntry | None = None) -> Applied:
        """Run a step file, recording each step's outcome in the row; resume continues after the last one done."""
        try:
            spec = formats.parse("elasticsearch", body)
        except formats.FormatError as exc:
            raise PermanentError(f"not a valid elasticsearch migration: {exc}", file=migration.path, line=exc.line,
                                 hint="see docs/elasticsearch.md for the step format") from None
        started = time.monotonic()
        self._reindexed = [0, 0]  # documents and server ms of this file's reindex tasks (this try's)
        try:
            if resume is not None:
                entry, new = resume, False
                take_new_text(entry, migration)
                entry.progress.pop("error", None)
                previous_ms = entry.execution_time
            else:
                entry, new = self._entry(migration, ctx, self.ledger.next_rank()), True
                previous_ms = 0
            entry.status, entry.success, entry.run_id = Status.STARTED, False, ctx.run_id
            self._write(entry, new=new)
        except SearchError as exc:
            raise classify(exc)(f"{self.target}: cannot record the start of {migration.script}: {exc}",
                                file=migration.path) from exc
        progress = entry.progress
        # nothing of the file has reached the cluster: a new row, or a rerun after an untouched failure
        self._untouched = new or bool(progress.pop(UNTOUCHED, False))
        for i, step in enumerate(spec.steps):
            if i < int(progress.get("steps_done", 0)):
                continue
            resuming = progress.get("step_index") == i
            state = progress.get("step_state") if resuming else None
            progress["step_index"], progress["step_state"] = i, state if isinstance(state, dict) else {}
            self._run_step(migration, entry, i, step, resuming)
        entry.execution_time = previous_ms + int((time.monotonic() - started) * 1000)
        entry.status, entry.success = Status.SUCCESS, True
        try:
            self._write(entry, what="success")
        except SearchError as exc:
            # every step is recorded done: a retry finds steps_done = all and only records success
            raise classify(exc)(f"{self.target}: {migration.script} ran, but its success could not be recorded: {exc}",
                                file=migration.path) from exc
        switches = progress.get("switches") or []
        return Applied(entry.execution_time, statements=len(spec.steps),
                       details={"steps": len(spec.steps), "reindexed": {"documents": self._reindexed[0],
                                                                        "ms": self._reindexed[1]},
                                **({"switched": [f"{s['alias']}: {s['from']} → {s['to']}" for s in switches]}
                                   if switches else {})})

    def _run_step(self, migration: Migration, entry: LedgerEntry, i: int, step: formats.Step, resuming: bool) -> None:
        progress = entry.progress
        label = f"{migration.script} step {i + 1} ({step.kind})"
        sctx = StepContext(api=self.api, fence=self._fence, checkpoint=lambda: self._write(entry, what=label, checkpoint=True),
                           lease_lost=lambda: bool(self._lease() and self._lease().lost),  # type: ignore[union-attr]
                           state=progress["step_state"], resuming=resuming, label=label, batch_size=self.batch_size,
                           poll_seconds=self.poll_seconds, log_every_seconds=self.log_every_seconds,
                           reindexed=self._reindexed)
        try:
            if step.kind == "blue_green":
                progress.setdefault("switches", []).append(BlueGreen(sctx, step.args).run())  # type: ignore[arg-type]
            else:
                run_simple(sctx, step)
                if step.kind == "switch_alias":
                    a = step.args
                    progress.setdefault("switches", []).append(
                        {"alias": a.alias, "from": a.from_, "to": a.to, "mode": "switch_alias",  # type: ignore[attr-defined]
                         "switched_at": datetime.now(timezone.utc).isoformat()})
            progress["steps_done"] = i + 1
            progress.pop("step_index", None)
            progress.pop("step_state", None)
            self._write(entry, what=f"{label} done", checkpoint=True)
        except LeaseLost:
            raise  # not ours to record any more
        except (SearchError, MigrationError) as exc:
            error = self._error(exc, migration, i, step)
            # the first step rejected (a 4xx, not a timeout: a timed-out request may still be applied)
            # before it recorded any state: the cluster is as it was, so a fixed file may rerun
            if (self._untouched and i == 0 and not progress.get("step_state") and step.kind != "blue_green"
                    and not isinstance(error, TransientError)):
                progress[UNTOUCHED] = True
            self._record_failure(entry, error)
            raise error from exc

    def _error(self, exc: Exception, migration: Migration, i: int, step: formats.Step) -> PermanentError:
        if isinstance(exc, MigrationError):
            cls = type(exc) if isinstance(exc, TransientError) else PermanentError
            return cls(f"step {i + 1} ({step.kind}): {exc.args[0] if exc.args else exc}", file=migration.path,
                       statement=short(step), hint=exc.hint)
        assert isinstance(exc, SearchError)
        hint = "retry; the steps already done are not run again" if exc.transient else \
            (_HINTS.get(exc.type or "") or "fix the step") + "; the steps before it are recorded as done"
        return classify(exc)(f"step {i + 1} ({step.kind}): {exc}", file=migration.path, statement=short(step), hint=hint)

    def _record_failure(self, entry: LedgerEntry, error: Exception) -> None:
        try:
            entry.status, entry.success = Status.FAILED, False
            entry.progress["error"] = str(error)[:2000]
            self._write(entry, what="the failure")
        except (SearchError, MigrationError):
            pass  # the row stays 'started', which resumes the same way

    # -- undo (an alias back to the retained index) ----------------------------------------

    def undo_blocker(self, entry: LedgerEntry) -> str | None:
        switches = (entry.progress or {}).get("switches") or []
        if not switches:
            return "it switched no alias (only blue_green and switch_alias steps are undone without a file)"
        for sw in switches:
            if sw.get("from") is None:
                return f"alias {sw['alias']} was created by it (there is no previous index to go back to)"
            if sw.get("skipped"):
                return (f"its script skipped {sw['skipped']:,} document(s) of {sw['from']} when copying, so a document "
                        f"missing from {sw['to']} cannot be told from one deleted since the switch: undo would bring "
                        "deleted documents back")
            if sw.get("deleted_at"):
                return f"{sw['from']}, the index before it, was deleted by retention on {sw['deleted_at'][:10]}"
            # checked before anything is undone (undo's pre-check), not found half way (issue 28)
            try:
                gone = not self.api.exists(sw["from"])
            except SearchError as exc:
                raise classify(exc)(f"{self.target}: cannot check {sw['from']} before undoing: {exc}") from exc
            if gone:
                return f"{sw['from']}, the index before it, no longer exists (deleted outside polymigrate)"
        return None

    def undo_recorded(self, entry: LedgerEntry, ctx: RunContext) -> Applied:
        """Point each alias the migration switched back to the index it left (still retained),
        carrying back what was written since (docs/elasticsearch.md), newest switch first."""
        why = self.undo_blocker(entry)
        if why:
            raise PermanentError(f"cannot undo {entry.script} (version {entry.version}): {why}",
                                 hint="write a new forward migration instead")
        started = time.monotonic()
        label = f"undo {entry.script}"
        for sw in reversed(entry.progress["switches"]):
            state = sw.setdefault("undo", {})
            sctx = StepContext(api=self.api, fence=self._fence, checkpoint=lambda: self._write(entry, what=label, checkpoint=True),
                               lease_lost=lambda: bool(self._lease() and self._lease().lost),  # type: ignore[union-attr]
                               state=state, resuming=bool(state), label=label, batch_size=self.batch_size,
                               poll_seconds=self.poll_seconds, log_every_seconds=self.log_every_seconds)
            try:
                undo_switch(sctx, sw, ctx)
            except SearchError as exc:
                raise classify(exc)(f"{label}: {exc}", hint="retry: undo continues where it stopped") from exc
        entry.status, entry.success = Status.UNDONE, False
        entry.progress["undone_at"] = datetime.now(timezone.utc).isoformat()
        self._write(entry, what="undone")
        ms = int((time.monotonic() - started) * 1000)
        return Applied(ms, len(entry.progress["switches"]),
                       {"undone": entry.version, "aliases": [f"{s['alias']}: {s['to']} → {s['from']}"
                                                             for s in entry.progress["switches"]]})

    # -- retention -------------------------------------------------------------------------

    def expire_retained(self, ctx: RunContext, *, now: datetime | None = None, dry_run: bool = False) -> list[str]:
        """Delete the indices blue_green (and undo) retained once their ``retain_until`` passed and no
        alias points to them; record it in the row. Takes the lock. The names deleted (or due)."""
        now = now or datetime.now(timezone.utc)
        done: list[str] = []
        with self.lock(ctx.owner, ctx.lock_wait_seconds):
            for entry in self.ledger.read():
                changed = False
                for sw in (entry.progress or {}).get("switches") or []:
                    for index, until_key, mark in (
                            (sw.get("from"), "retain_until", "deleted_at"),
                            (sw.get("to"), "undo_retain_until", "to_deleted_at")):
                        until = sw.get(until_key) if until_key == "retain_until" else (sw.get("undo") or {}).get(until_key)
                        if not index or not until or sw.get(mark) or datetime.fromisoformat(until) > now:
                            continue
                        if until_key == "retain_until" and entry.status is Status.UNDONE:
                            continue  # undone: the alias is back on this index
                        aliases = (self.api.indices(index).get(index) or {}).get("aliases") or {}
                        if aliases:
                            log.warning("%s: retained %s is behind alias(es) %s again; kept", self.target, index,
                                        ", ".join(sorted(aliases)))
                            continue
                        done.append(index)
                        if dry_run:
                            continue
                        if self.api.exists(index):
                            self._fence(f"deleting retained {index}")
                            self.api.delete_index([index])
                        sw[mark] = now.isoformat()
                        changed = True
                        log.info("%s: deleted %s, retained since %s until %s", self.target, index,
                                 sw.get("switched_at", "?")[:19], until[:19])
                if changed:
                    self._write(entry, what="retention")
        return done

    # -- verify ----------------------------------------------------------------------------

    def run_expectations(self, suites: list[Any]) -> list[Check]:
        """The suites' expectations as ``_count`` queries (one terms aggregation for uniqueness) on the
        index or alias each suite names (``polymigrate.expectations``: the documented subset)."""
        from polymigrate.expectations import SearchProbe, run_document_suites

        try:
            outcomes = run_document_suites(suites, SearchProbe(self.api))
        except SearchError as exc:
            raise classify(exc)(f"{self.target}: the expectation suites could not run: {exc}",
                                hint="check each suite's object (index or alias) and field names") from exc
        return self._expectation_checks(outcomes)

    def health_checks(self, ctx: RunContext, migrations: list[Migration]) -> list[Check]:
        """Every alias a blue_green switch moved points where the ledger says (the new index, or the
        retained one after an undo), and while the retained index is kept the alias holds at least
        its documents (the copy lost none; writes since the switch only add, bar deletions)."""
        latest: dict[str, tuple[LedgerEntry, dict]] = {}
        for entry in self.read_ledger():
            if entry.status in (Status.DELETED, Status.FAILED, Status.STARTED):
                continue
            for sw in (entry.progress or {}).get("switches") or []:
                if sw.get("alias") and sw.get("to"):
                    latest[sw["alias"]] = (entry, sw)
        checks = []
        for alias, (entry, sw) in sorted(latest.items()):
            undone = entry.status is Status.UNDONE
            expected, other = (sw.get("from"), sw.get("to")) if undone else (sw.get("to"), sw.get("from"))
            actual = sorted(self.api.alias_targets(alias))
            where = "the retained index (undone)" if undone else "the new index"
            if actual != [expected]:
                checks.append(Check(f"alias {alias}", False, technology=self.technology, detail=(
                    f"points to {', '.join(actual) or 'nothing'}, the ledger ({entry.script}) says {expected}, "
                    f"{where}; someone moved it by hand? move it back with POST /_aliases")))
                continue
            detail = f"on {expected} as {entry.script} recorded"
            ok = True
            retained = other and not sw.get("deleted_at" if not undone else "to_deleted_at") and self.api.exists(other)
            if retained:
                self.api.refresh(expected)
                have, kept = self.api.count(alias), self.api.count(other)
                skipped = int(((sw.get("counts") or {}).get("skipped")) or 0) if not undone else 0
                ok = have >= kept - skipped
                detail += f"; {have:,} document(s), retained {other} has {kept:,}" + (
                    "" if ok else f": {kept - skipped - have:,} missing (inspect before {other} expires)")
            checks.append(Check(f"alias {alias}", ok, detail, technology=self.technology))
        return checks

    # -- snapshot --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Indices (under the domain's ``index_prefix``, hidden ones left out) with their fields and
        aliases, and the index/component templates under the same prefix."""
        return snapshot(self.api, self.index_prefix)

    # -- recovery verbs (polymigrate.recovery) ----------------------------------------------

    def repair(self, migrations: list[Migration], ctx: RunContext) -> RepairReport:
        """Realign checksums of changed files (a half-done row keeps its progress); mark rows whose
        file is gone deleted. Each write is fenced and conditional, as in a run."""
        try:
            return repair_rows(migrations, self.read_ledger(), lambda e: self._write(e, what="repair"))
        except SearchError as exc:
            raise classify(exc)(f"{self.target}: repair: {exc}") from exc

    def baseline(self, version: str, description: str, ctx: RunContext) -> None:
        """Mark everything up to ``version`` as applied without running it (an empty ledger only)."""
        try:
            if self._baseline_wanted(version, self.ledger.index):  # reads the ledger: next_rank is current
                entry = baseline_entry(self.domain, self.ledger.next_rank(), version, description, ctx)
                self._write(entry, new=True, what="the baseline")
        except SearchError as exc:
            raise classify(exc)(f"{self.target}: baseline: {exc}") from exc

    def close(self) -> None:
        for lease in list(self._leases):
            lease.release()
        self._leases.clear()
        self.api.close()
