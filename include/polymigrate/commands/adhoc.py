"""Ad hoc runs, like Flyway's: ``--url`` and ``--locations``, no environment and no policy.

An ad hoc run is recorded as such (environment ``adhoc``) when an audit store is configured. It is
refused against a target that belongs to a policy-bound environment (one that requires approvals, an
audit trail, a window, a promotion or bans destructive changes): found by its URL among that
environment's connections, or by its own ledger naming that environment. Run such a target with
``-e ENV -d DOMAIN``, so its policy applies; an ad hoc URL is never a way around it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from polymigrate.adapters import adapter_class
from polymigrate.adapters.base import Adapter
from polymigrate.catalog import Kind, Migration, discover
from polymigrate.commands.context import LOG, RunParams, Who, audit_sink, event
from polymigrate.connections import redact, same_target, url_for
from polymigrate.errors import PolicyRefused, Problem
from polymigrate.events import AuditEvent, EventSink, NullSink
from polymigrate.ledger import RunContext
from polymigrate.spec import Project, TechnologyConfig, load_project

ADHOC = "adhoc"  # the environment (and default domain) ad hoc runs are recorded under


def discover_locations(domain: str, technology: str, locations: list[Path]) -> tuple[list[Migration], list[Problem]]:
    """Every migration under the folders, in apply order; duplicates across folders are problems."""
    problems: list[Problem] = []
    found: list[Migration] = []
    for folder in locations:
        if not folder.is_dir():
            problems.append(Problem(str(folder), "not a folder", hint="pass the folder holding V…__….sql files"))
            continue
        cat = discover(domain, technology, folder)
        problems += cat.problems
        found += cat.migrations.get(technology, [])
    seen: dict[tuple, Migration] = {}
    for m in found:
        key = (m.kind, m.version if m.version is not None else m.description.lower())
        if key in seen:
            problems.append(Problem(str(m.path), f"duplicate {m.id} (also {seen[key].path})", hint="renumber one"))
        seen[key] = m
    order = {Kind.VERSIONED: 0, Kind.REPEATABLE: 1, Kind.UNDO: 2}
    ms = sorted(seen.values(), key=lambda m: (order[m.kind], m.version.parts if m.version else (),
                                              m.description.lower()))
    return ms, problems


def bound_environment(project: Project | None, url: str, technology: str) -> tuple[str, str] | None:
    """(environment, where) when ``url`` is one of the connections of an environment whose policy
    constrains runs; only connections this process can resolve (``AIRFLOW_CONN_*``) are compared."""
    if project is None:
        return None
    for env in project.environments.values():
        if not env.policy.constrains_runs:
            continue
        for region in env.regions:
            conn_id = env.connection_id(region, technology)
            known = url_for(conn_id)
            if known and same_target(url, known):
                return env.name, f"{env.name}/{region}/{technology} (connection '{conn_id}')"
    return None


@dataclass
class AdhocRun:
    """One ad hoc target: its files, who runs, and where the events go."""

    url: str
    technology: str
    domain: str
    migrations: list[Migration]
    problems: list[Problem]
    ctx: RunContext
    sink: EventSink
    settings: TechnologyConfig
    specs: Path | None = None
    params: RunParams = field(default_factory=RunParams)
    _project: Any = None

    @property
    def project(self) -> Project | None:
        """The spec tree beside the run, read only when needed (a plain ad hoc run never needs it)."""
        if self._project is None:
            self._project = _load(self.specs) or False
        return self._project or None

    @property
    def label(self) -> str:
        return redact(self.url)

    def open(self) -> Adapter:
        """The adapter, after checking its ledger does not say it belongs to a policy-bound environment."""
        adapter = adapter_class(self.technology).from_url(self.url, domain=self.domain, settings=self.settings)
        try:
            self._check_ledger(adapter)
        except BaseException:
            adapter.close()
            raise
        return adapter

    def _check_ledger(self, adapter: Adapter) -> None:
        recorded = {e.environment for e in adapter.read_ledger() if e.environment and e.environment != ADHOC}
        if not recorded or self.project is None:
            return
        named = sorted(e.name for e in self.project.environments.values() if e.name in recorded and e.policy.constrains_runs)
        if named:
            self.sink.emit(AuditEvent(kind="refused", domain=self.domain, environment=ADHOC, actor=self.ctx.actor,
                                      run_id=self.ctx.run_id, technology=self.technology,
                                      details={"reason": f"ad hoc run against a target of {', '.join(named)}",
                                               "gate": "adhoc", "url": self.label}))
            raise PolicyRefused(f"{self.label}: its ledger records runs of '{self.domain}' in {', '.join(named)}, "
                                "whose policy an ad hoc run would skip",
                                hint=f"run it with -e {named[0]} -d {self.domain} so that policy applies")

    def record_failure(self, error: BaseException, *, retryable: bool = False) -> None:
        """``task_failed`` with the error, as a spec run's failure is recorded (commands/failures.py): an
        ad hoc run's outcome is read from the store too. The URL's password never reaches the event,
        even where a driver's message quoted it."""
        from polymigrate.commands.failures import failure_details

        details = {**failure_details(error, retryable=retryable), "adhoc": True, "url": self.label}
        secret = urlsplit(self.url).password if "://" in self.url else None
        if secret:
            details["error"] = details["error"].replace(secret, "***")
        try:
            self.sink.emit(AuditEvent(kind="task_failed", domain=self.domain, environment=ADHOC, actor=self.ctx.actor,
                                      run_id=self.ctx.run_id, technology=self.technology, details=details))
        except Exception as exc:  # noqa: BLE001  recording never hides the run's own error
            LOG.error("the ad hoc run's failure could not be recorded in the audit store: %s", exc)

    def close(self) -> None:
        close = getattr(self.sink, "close", None)
        if callable(close):
            close()


def open_adhoc(url: str, technology: str, *, domain: str | None, locations: list[Path], placeholders: dict[str, str],
               schema: str | None, table: str | None, lock_wait: float | None, specs: Path | None, who: Who,
               audit: Callable[[], Any], verb: str, params: RunParams | None = None, record: bool = True) -> AdhocRun:
    """An ad hoc run, refused (and the attempt recorded) when ``url`` is a target of a policy-bound
    environment of ``specs``. With ``record`` (every verb that changes the target) and an audit store
    configured, the run is recorded under environment ``adhoc``, starting with ``triggered``."""
    # only connections in the environment can match: without any, the spec tree need not be read
    known = any(k.startswith("AIRFLOW_CONN_") for k in os.environ)
    project = _load(specs) if known else None
    name = domain or ADHOC
    params = params or RunParams()
    sink: EventSink = audit_sink(None, audit()) if record else NullSink()
    details = {"by": who.triggered_by, "run_type": who.run_type, "origin": who.origin, "verb": verb, "adhoc": True,
               "url": redact(url), "params": {"dry_run": params.dry_run, "target_version": params.target_version}}
    bound = bound_environment(project, url, technology)
    try:
        if bound:
            env, where = bound
            sink.emit(event(who, name, ADHOC, "refused", technology=technology,
                            details={**details, "reason": f"ad hoc run against {where}", "gate": "adhoc"}))
            raise PolicyRefused(f"{redact(url)} is the target {where}; an ad hoc run would skip the policy of {env}",
                                hint=f"run it with -e {env} -d DOMAIN (the domain whose files these are)")
        sink.emit(event(who, name, ADHOC, "triggered", technology=technology, details=details))
    except BaseException:
        close = getattr(sink, "close", None)
        if callable(close):
            close()
        raise
    migrations, problems = discover_locations(name, technology, locations)
    ctx = RunContext(domain=name, environment=ADHOC, actor=who.actor, run_id=who.run_id, placeholders=placeholders,
                     lock_wait_seconds=lock_wait if lock_wait is not None else 300.0)
    return AdhocRun(url, technology, name, migrations, problems, ctx, sink,
                    TechnologyConfig(schema=schema, ledger=table), specs, params, project)


def _load(specs: Path | None) -> Project | None:
    return load_project(specs) if specs is not None and Path(specs).is_dir() else None
