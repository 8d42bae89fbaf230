"""Run a target's pending migrations through its adapter: lock, read ledger, validate, apply.

The same for every technology. Idempotent by construction: the ledger is re-read under the lock,
so a retried or concurrent run applies only what is still pending.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

from polymigrate import lineage
from polymigrate.adapters.base import NEEDS_UNDO_FILE, Adapter
from polymigrate.catalog import Kind, Migration, applicable, in_phase
from polymigrate.checksums import flyway_checksum
from polymigrate.errors import MigrationError, PermanentError, SpecError, TransientError
from polymigrate.events import AuditEvent, EventSink, NullSink
from polymigrate.ledger import LedgerEntry, RunContext, Status
from polymigrate.plan import TargetPlan
from polymigrate.reconcile import MigrationInfo, State, current_version, reconcile, to_apply, validate


@dataclass
class RunResult:
    target: str
    technology: str
    applied: list[dict] = field(default_factory=list)  # {version, script, ms, action}
    skipped: int = 0
    dry_run: bool = False
    current_version: str | None = None
    lock_wait_ms: int = 0  # from asking for the target's migration lock to holding it
    details: dict = field(default_factory=dict)  # script -> what its adapter reported (rows, keys, calls): for metrics

    def to_dict(self) -> dict:
        return {"target": self.target, "technology": self.technology, "applied": self.applied,
                "dry_run": self.dry_run, "current_version": self.current_version}


def placeholders_for(ctx: RunContext) -> dict[str, str]:
    return {**ctx.placeholders, "polymigrate:domain": ctx.domain, "polymigrate:environment": ctx.environment,
            "polymigrate:region": ctx.region}


def _event(kind: str, adapter: Adapter, ctx: RunContext, info: MigrationInfo | None = None, **kw) -> AuditEvent:
    m = info.migration if info else None
    return AuditEvent(kind=kind, domain=ctx.domain, environment=ctx.environment, region=ctx.region,
                      technology=adapter.technology, version=info.version if info else None,
                      script=info.script if info else None, checksum=m.checksum if m else None,
                      actor=ctx.actor, run_id=ctx.run_id, dag_id=ctx.dag_id, task_id=ctx.task_id,
                      try_number=ctx.try_number, **kw)


def record_missing_successes(adapter: Adapter, entries: list[LedgerEntry], ctx: RunContext, sink: EventSink) -> None:
    """Audit the ledger rows an earlier try of this run committed without their ``migration_succeeded``
    event (the audit store was unreachable between the commit and the event), marked ``recovered``.

    Without this a retry finds nothing pending and the trail silently lacks a change that happened.
    Only sinks that can say what they hold (``succeeded_scripts``) take part.
    """
    recorded = getattr(sink, "succeeded_scripts", None)
    if recorded is None or not ctx.run_id:
        return
    mine = [e for e in entries if e.run_id == ctx.run_id and e.status is Status.SUCCESS]
    if not mine:
        return
    have = recorded(run_id=ctx.run_id, domain=ctx.domain, region=ctx.region, technology=adapter.technology)
    for e in mine:
        if e.script in have:
            continue
        sink.emit(AuditEvent(kind="migration_succeeded", domain=ctx.domain, environment=ctx.environment,
                             region=ctx.region, technology=adapter.technology, version=e.version, script=e.script,
                             checksum=e.checksum, actor=ctx.actor, run_id=ctx.run_id, dag_id=ctx.dag_id,
                             task_id=ctx.task_id, try_number=ctx.try_number, duration_ms=e.execution_time,
                             details={"recovered": True, "installed_by": e.installed_by,
                                      "installed_on": e.installed_on.isoformat() if e.installed_on else None}))


def plan_target(adapter: Adapter, migrations: list[Migration], region: str, *, target_version: str | None = None,
                out_of_order: bool = False, entries: list[LedgerEntry] | None = None) -> TargetPlan:
    """Read the ledger (no lock: planning is a read; ``entries``: already read) and say what a run would do."""
    entries = adapter.read_ledger() if entries is None else entries
    infos = reconcile(migrations, entries, target_version=target_version, out_of_order=out_of_order)
    return TargetPlan.from_infos(region, adapter.technology, adapter.target, infos, current_version(infos),
                                 out_of_order=out_of_order)


def migrate(adapter: Adapter, migrations: list[Migration], ctx: RunContext, *, target_version: str | None = None,
            out_of_order: bool = False, dry_run: bool = False, sink: EventSink | None = None,
            on_progress: Callable[[int, int, MigrationInfo], None] | None = None,
            target: str | None = None, phase: str | None = None) -> RunResult:
    """Apply what is pending on one target, up to ``target_version`` when given; with ``phase``, only
    the files of that phase and earlier ones (docs/phases.md).

    Raises TransientError or PermanentError on failure. ``target`` is the former name of
    ``target_version`` (a "target" is a database everywhere else), still accepted.
    """
    target_version = target_version or target
    sink = sink or NullSink()
    result = RunResult(adapter.target, adapter.technology, dry_run=dry_run)
    asked = time.monotonic()
    with adapter.lock(ctx.owner, ctx.lock_wait_seconds):
        # how long another run held the target (plus opening the connection): the lock-wait metric
        result.lock_wait_ms = int((time.monotonic() - asked) * 1000)
        entries = adapter.read_ledger()
        if not dry_run:
            record_missing_successes(adapter, entries, ctx, sink)
        infos = reconcile(migrations, entries, target_version=target_version, out_of_order=out_of_order)
        validate(infos, out_of_order=out_of_order)
        todo = [i for i in to_apply(infos) if in_phase(i.migration, phase)]
        result.skipped = sum(1 for i in infos if i.state.succeeded)
        values = placeholders_for(ctx)
        # every body first: an unknown placeholder in file N must stop the run before file 1 is applied
        problems: list = []
        bodies: dict[str, str] = {}
        for info in todo:
            try:
                bodies[info.script] = info.migration.render(values)  # type: ignore[union-attr]
            except SpecError as exc:
                problems += exc.problems
        if problems:
            raise SpecError(problems)
        # the adapter's own checks (a command the server lacks, a missing module) also before file 1
        adapter.preflight([(info.migration, bodies[info.script]) for info in todo])  # type: ignore[misc]
        for n, info in enumerate(todo, 1):
            m = info.migration
            assert m is not None
            if on_progress:
                on_progress(n, len(todo), info)
            if dry_run:
                result.applied.append({"version": info.version, "script": info.script, "ms": 0, "action": "would apply"})
                continue
            body = bodies[info.script]
            if m.kind is Kind.REPEATABLE:
                # Flyway checksums a repeatable after replacing placeholders (a new value re-runs it);
                # the ledger row carries that checksum so Flyway reads the file as up to date
                m = replace(m, checksum=flyway_checksum(body))
            sink.emit(_event("migration_started", adapter, ctx, info))
            started = time.monotonic()
            resume = info.entry if info.state is State.INCOMPLETE else None
            # a changed file whose failed try committed nothing runs again from its start (recovery)
            action = "apply" if resume is None else "resume" if resume.checksum == m.checksum else "rerun"
            try:
                applied = adapter.apply(m, body, ctx, resume=resume)
            except MigrationError as exc:
                sink.emit(_event("migration_failed", adapter, ctx, info,
                                 duration_ms=int((time.monotonic() - started) * 1000),
                                 details={"error": str(exc), "transient": isinstance(exc, TransientError)}))
                raise
            details = dict(applied.details or {})
            if m.declares_phase:
                details["phase"] = m.phase
            # the datasets it changed: the audit page links the run to them (the adapter's parse when it has one)
            changed = list(dict.fromkeys(applied.changed)) if applied.changed is not None else lineage.changed(m, values)
            if changed:
                details["datasets"] = [{"kind": c.kind, "name": c.name, "action": c.action} for c in changed]
            sink.emit(_event("migration_succeeded", adapter, ctx, info, duration_ms=applied.execution_time_ms,
                             details=details))
            result.applied.append({"version": info.version, "script": info.script,
                                   "ms": applied.execution_time_ms, "action": action})
            result.details[info.script] = details
        result.current_version = current_version(reconcile(migrations, adapter.read_ledger())) if not dry_run \
            else current_version(infos)
    return result


def undo_to(adapter: Adapter, migrations: list[Migration], ctx: RunContext, version: str, *,
            dry_run: bool = False, sink: EventSink | None = None,
            on_progress: Callable[[int, int, MigrationInfo], None] | None = None) -> RunResult:
    """Revert every applied version above ``version``, newest first, each through its ``U`` file.

    Checks everything before touching anything: each version to revert must be applied cleanly and
    have an undo file, otherwise a PermanentError lists what is in the way.
    """
    from polymigrate.versions import Version

    sink = sink or NullSink()
    floor = Version(version)
    undo_files = {m.version: m for m in migrations if m.kind is Kind.UNDO}
    # MongoDB files carry their undo (down); a U file, where there is one, still wins
    undo_files.update({m.version: m for m in migrations if m.kind is Kind.VERSIONED
                       and m.version not in undo_files and adapter.inline_undo(m)})
    result = RunResult(adapter.target, adapter.technology, dry_run=dry_run)
    with adapter.lock(ctx.owner, ctx.lock_wait_seconds):
        infos = reconcile(applicable(migrations), adapter.read_ledger(), out_of_order=True)
        above = sorted((i for i in infos if i.version is not None and Version(i.version) > floor
                        and i.entry is not None and i.state is not State.UNDONE),
                       key=lambda i: Version(i.version), reverse=True)  # type: ignore[arg-type]
        # a half-undone version is what this undo resumes (its adapter knows where it stopped)
        blocked = [i for i in above if not i.state.succeeded and i.state is not State.HALF_UNDONE]
        fixes = ["undo to a higher version"]  # each refusal adds only the fix that can help it (issue 28)
        problems = []
        for i in blocked:
            if i.state is State.BASELINE:
                problems.append(f"{i.script}: version {i.version} is a baseline: it was marked applied without "
                                "running, so there is nothing of it to undo")
            elif i.state is State.INCOMPLETE:
                problems.append(f"{i.script}: version {i.version} stopped half way")
                fixes.insert(0, "finish the half-done version first (migrate, once what stopped it is fixed)")
            else:
                problems.append(f"{i.script}: version {i.version} is {i.state.value}")
                if i.state in (State.CHANGED, State.MISSING):
                    fixes.insert(0, "`repair` first (a changed or missing file)")
        contract = [i for i in above if i.migration is not None and i.migration.phase == "contract"]
        problems += [f"{i.script}: version {i.version} is a contract-phase migration: what it removed is gone for the "
                     "application versions that still need it, so undoing it is refused (docs/phases.md; to bring "
                     "something back, write a new expand migration)" for i in contract]
        if contract:
            fixes.insert(0, "write a new forward (expand) migration that brings back what is needed")
        for i in above:
            if i.state is State.BASELINE:
                continue  # nothing ran, so no undo file is missing
            if Version(i.version) not in undo_files:  # type: ignore[arg-type]
                why = adapter.undo_blocker(i.entry)  # type: ignore[arg-type]
                if why is None:
                    continue
                if why != NEEDS_UNDO_FILE:
                    problems.append(f"{i.script}: version {i.version} cannot be undone: {why}")
                    fixes.insert(0, "write a new forward migration that reverts it")
                elif not adapter.capabilities.reversible:
                    problems.append(f"{i.script}: version {i.version}: {adapter.technology} migrations have no undo "
                                    "files; to revert it, write a new forward migration")
                    fixes.insert(0, "write a new forward migration that reverts it")
                else:
                    suffix = i.migration.path.suffix if i.migration is not None else ".sql"
                    inline = (', or its "down" key' if suffix == ".json" else ", or down() in the file") \
                        if adapter.technology == "mongodb" else ""
                    problems.append(f"{i.script}: version {i.version} has no undo file (U{i.version}__…{suffix}{inline})")
                    fixes.insert(0, "write the missing undo files")
        if problems:
            raise PermanentError(f"cannot undo to {version}; nothing was changed:\n  " + "\n  ".join(problems),
                                 hint=", or ".join(dict.fromkeys(fixes)))
        values = placeholders_for(ctx)
        for n, info in enumerate(above, 1):
            u = undo_files.get(Version(info.version))  # type: ignore[arg-type]
            script = u.script if u is not None else info.script
            if on_progress:
                on_progress(n, len(above), info)
            if dry_run:
                result.applied.append({"version": info.version, "script": script, "ms": 0, "action": "would undo"})
                continue
            # without an undo file the adapter reverts what it recorded (an alias switched back)
            applied = adapter.undo(u, u.render(values), ctx) if u is not None else \
                adapter.undo_recorded(info.entry, ctx)  # type: ignore[arg-type]
            sink.emit(_event("undone", adapter, ctx, info, duration_ms=applied.execution_time_ms,
                             details={"undo_script": script, **(applied.details or {})}))
            result.applied.append({"version": info.version, "script": script, "ms": applied.execution_time_ms,
                                   "action": "undo"})
        result.current_version = current_version(reconcile(applicable(migrations), adapter.read_ledger()))
    return result
