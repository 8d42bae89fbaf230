"""Snapshots and drift, kept in the audit store.

* After a region verifies, each target's snapshot is recorded as a ``snapshot`` event (only when it
  differs from the one on record, so a nightly rehearsal with nothing pending adds nothing): the
  baseline. Kept in the hash chain, so a baseline edited to hide a manual change breaks the chain.
* Nightly, ``drift__<environment>`` snapshots every target again and compares it with its baseline;
  the differences not allowlisted in domain.yaml (``drift.allow``) are recorded as one ``drift``
  event per domain, each with the night it was first seen. Drift never fails a migration; the next
  run's approval summary shows it (``latest_drift``).
"""

from __future__ import annotations

from typing import Any

from polymigrate.adapters.base import Adapter
from polymigrate.commands.context import Run
from polymigrate.snapshot_diff import MAX_DIFFERENCES, Difference, allowed, carry_since, diff, fingerprint
from polymigrate.errors import MigrationError, PermanentError
from polymigrate.events import EventSink
from polymigrate.governance.enforce import retention_checks
from polymigrate.governance.labels import LabelIndex

DRIFT_SHOWN = 10  # differences listed in an approval summary


def store_of(sink: EventSink) -> Any | None:
    """The audit store behind a sink when it can be read (``query``), else None (a NullSink)."""
    return sink if callable(getattr(sink, "query", None)) else None


def latest_snapshot(store: Any, domain: str, environment: str, region: str, technology: str):
    """The baseline of one target: the newest ``snapshot`` event recorded for it, or None."""
    found = store.query(domain=domain, environment=environment, region=region, technology=technology,
                        kind="snapshot", limit=1, newest_first=True)
    return found[-1] if found else None


def record_snapshot(run: Run, region: str, adapter: Adapter, *, source: str) -> dict[str, Any] | None:
    """Record the target's snapshot as its new baseline unless the one on record is the same; what
    the verified event says about it (None: no readable audit store to keep it in)."""
    store = store_of(run.sink)
    if store is None:
        return None
    snap = adapter.snapshot()
    fp = fingerprint(snap)
    last = latest_snapshot(store, run.domain.name, run.environment.name, region, adapter.technology)
    if last is not None and last.event.details.get("fingerprint") == fp:
        return {"fingerprint": fp[:16], "unchanged_since": last.event.at.isoformat()}
    run.emit("snapshot", region=region, technology=adapter.technology,
             details={"fingerprint": fp, "source": source, "target": adapter.target, "snapshot": snap})
    return {"fingerprint": fp[:16], "recorded": True}


def drift_domain(run: Run) -> dict[str, Any]:
    """Compare every served target of the domain in this environment with its baseline; record one
    ``drift`` event (also when nothing drifted: the report of that night). A target that cannot be
    read is named in the event, and fails the task after the others were compared."""
    from polymigrate.targets import served

    store = store_of(run.sink)
    if store is None:
        raise PermanentError("drift needs the audit store: its baselines are the snapshots recorded there",
                             hint="configure the polymigrate_audit connection (docs/audit.md)")
    domain, env = run.domain, run.environment
    now = run.clock().isoformat()
    previous = store.query(domain=domain.name, environment=env.name, kind="drift", limit=1, newest_first=True)
    before = (previous[-1].event.details.get("differences") or []) if previous else []
    targets: dict[str, dict[str, Any]] = {}
    found: list[Difference] = []
    labels = LabelIndex.of(domain.labels)
    errors: list[str] = []
    for region, techs in served(run.project, domain, env).items():
        if not run.params.selects(region):
            continue
        for tech in techs:
            label = f"{region}/{tech}"
            adapter = run.connector.open(env, region, tech, domain)
            if adapter is None:
                targets[label] = {"skipped": f"connection '{env.connection_id(region, tech)}' is not configured"}
                continue
            try:
                retention = [c for c in retention_checks(adapter, labels) if not c.ok]
                snap = adapter.snapshot()
                base = latest_snapshot(store, domain.name, env.name, region, tech)
                if base is None:  # never verified here: start from today rather than report nothing forever
                    run.emit("snapshot", region=region, technology=tech,
                             details={"fingerprint": fingerprint(snap), "source": "drift (first baseline)",
                                      "target": adapter.target, "snapshot": snap})
                    targets[label] = {"baseline": "none on record: recorded this one", "differences": 0}
                    continue
                diffs = diff(tech, region, base.event.details.get("snapshot") or {}, snap)
            except MigrationError as exc:
                errors.append(f"{label}: {exc}")
                targets[label] = {"error": str(exc)[:300]}
                continue
            finally:
                adapter.close()
            kept = [d for d in diffs if not allowed(d, domain.drift.allow)]
            # retention that stopped being enforced is drift whatever the allowlist says (docs/governance.md)
            kept += [Difference(tech, region, c.name, "changed", "enforced", c.detail) for c in retention]
            targets[label] = {"baseline_at": base.event.at.isoformat(), "baseline_run": base.event.run_id,
                              "differences": len(kept), "allowlisted": len(diffs) - len(kept)}
            found += kept
    found = carry_since(found, before, now)
    for d in found:
        run.log.warning("drift: %s", d)
    run.log.info("drift of %s in %s: %d difference(s) on %d target(s)", domain.name, env.name, len(found), len(targets))
    details = {"count": len(found), "differences": [d.to_dict() for d in found[:MAX_DIFFERENCES]], "targets": targets}
    run.emit("drift", details=details)
    if errors:
        raise PermanentError("drift not compared on " + "; ".join(errors),
                             hint="the other targets were compared and recorded; fix the connection, then clear the task")
    return {"count": len(found), "targets": targets}


def latest_drift(sink: EventSink, domain: str, environment: str) -> dict[str, Any] | None:
    """The newest drift report of a domain in an environment, for the approval summary; None when
    there is none or no store to read (never fails: the approval goes on without it)."""
    store = store_of(sink)
    if store is None:
        return None
    try:
        found = store.query(domain=domain, environment=environment, kind="drift", limit=1, newest_first=True)
    except Exception:  # noqa: BLE001  the approver still sees everything else
        return None
    if not found:
        return None
    e = found[-1].event
    items = [str(Difference(**d)) for d in (e.details.get("differences") or [])[:DRIFT_SHOWN]]
    return {"at": e.at.isoformat(), "count": int(e.details.get("count") or 0), "items": items}

