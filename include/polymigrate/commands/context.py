"""What every verb is given: the run's scope, its params, who runs it, where its events go and how
its targets are reached.

The Airflow operators and the CLI differ only in how they fill these in: Airflow from the task's
context and provider hooks, the CLI from its options and ``AIRFLOW_CONN_*`` variables. Everything
decided from them (gates, approvals, events) is decided in ``polymigrate.commands``.
"""

from __future__ import annotations

import abc
import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping

from polymigrate.adapters.base import Adapter
from polymigrate.catalog import DomainCatalog, Migration
from polymigrate.commands.planning import Connect
from polymigrate.commands.project import all_migrations, environment_of, load_domain
from polymigrate.connections import env_var, url_for
from polymigrate.errors import PermanentError
from polymigrate.events import AuditEvent, EventSink, NullSink, default_actor
from polymigrate.ledger import RunContext
from polymigrate.policy import bound_changeset_hash
from polymigrate.spec import Domain, Environment, Policy, Project, Region, load_project
from polymigrate.versions import Version

LOG = logging.getLogger("polymigrate.commands")
MIN_OVERRIDE_REASON = 10  # "x" is not a reason an auditor can follow up
EVENT_LIST_CAP = 50       # lists inside one audit event (findings, missing promotions) stay readable



class UsageError(PermanentError):
    """A param or option cannot be used as given (an empty selection, a bad version, no reason)."""


@dataclass(frozen=True)
class RunParams:
    """How one run was asked for: the DAG's trigger params, or the CLI's options."""

    dry_run: bool = False
    target_version: str | None = None
    regions: list[str] | None = None  # None: every region
    allow_out_of_order: bool = False
    technologies: list[str] | None = None  # None: every technology of the domain
    override: bool = False  # emergency override: stricter approval (or break glass), gates passed, recorded
    override_reason: str | None = None

    # how each front end names the fields in a message: the DAG's params, the CLI's options
    DAG_NAMES = {"target_version": "param target_version", "regions": "param regions",
                 "technologies": "param technologies", "override": "param emergency_override needs emergency_reason"}
    CLI_NAMES = {"target_version": "--target", "regions": "--region", "technologies": "--technology",
                 "override": "--emergency-override needs --reason"}

    def checked(self, names: Mapping[str, str]) -> "RunParams":
        """Itself, or ``UsageError`` naming the param or option as the person gave it."""
        if self.target_version:
            try:
                Version(self.target_version)
            except ValueError as exc:
                raise UsageError(f"{names['target_version']}: {exc}") from None
        for name in ("regions", "technologies"):
            value = getattr(self, name)
            if value is not None and len(value) == 0:  # "none selected" must never widen to "all"
                raise UsageError(f"{names[name]} is empty: select at least one (or leave the default: all)")
        if self.override and (self.override_reason is None or len(self.override_reason) < MIN_OVERRIDE_REASON):
            raise UsageError(f"{names['override']}: say why (at least {MIN_OVERRIDE_REASON} characters, e.g. the "
                             "incident id); it is recorded in the audit trail and shown to the approvers")
        return self

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> "RunParams":
        """From a DAG run's params; ``UsageError`` names the param."""
        regions, techs = p.get("regions"), p.get("technologies")
        return cls(dry_run=bool(p.get("dry_run")), target_version=(p.get("target_version") or "").strip() or None,
                   regions=None if regions is None else list(regions),
                   allow_out_of_order=bool(p.get("allow_out_of_order")),
                   technologies=None if techs is None else list(techs), override=bool(p.get("emergency_override")),
                   override_reason=(p.get("emergency_reason") or "").strip() or None).checked(cls.DAG_NAMES)

    def selects(self, region: str, technology: str | None = None) -> bool:
        return (self.regions is None or region in self.regions) and \
            (technology is None or self.technologies is None or technology in self.technologies)


@dataclass(frozen=True)
class Who:
    """Who runs, as written into audit events, ledger rows and lock owners."""

    actor: str            # "olga@airflow", "ann@laptop-17"
    triggered_by: str     # the person four-eyes compares approvers with
    run_id: str | None
    origin: str = "airflow"  # airflow | cli
    run_type: str = ""
    dag_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None

    @classmethod
    def cli(cls) -> "Who":
        """The person at this terminal (``user@host``), with a run id of its own."""
        actor = default_actor()
        return cls(actor, actor, f"cli-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}", origin="cli",
                   run_type="cli")


class Connector(abc.ABC):
    """Opens adapters on the targets of an environment: Airflow through provider hooks, the CLI from
    ``AIRFLOW_CONN_*`` URLs. ``close`` releases what the connector opened for its adapters."""

    @abc.abstractmethod
    def open(self, environment: Environment, region: str, technology: str, domain: Domain) -> Adapter | None:
        """The adapter on that target; None when no connection is configured for it."""

    @abc.abstractmethod
    def how_to_configure(self, conn_id: str) -> str:
        """The fix to print when ``conn_id`` is not configured."""

    def close(self) -> None:
        return None

    def connect(self, environment: Environment, domain: Domain, technologies: list[str] | None = None) -> Connect:
        """A ``Connect`` for ``plan_domain`` and the gates; technologies outside ``technologies`` are not opened."""
        def connect(region: str, technology: str) -> Adapter | None:
            if technologies is not None and technology not in technologies:
                return None
            adapter = self.open(environment, region, technology, domain)
            if adapter is None:
                self.unconfigured.add(environment.connection_id(region, technology))
            return adapter
        return connect

    @property
    def unconfigured(self) -> set[str]:
        """Connection ids asked for that were not configured (their fixes go into the error)."""
        if not hasattr(self, "_unconfigured"):
            self._unconfigured: set[str] = set()
        return self._unconfigured

    @contextmanager
    def target(self, environment: Environment, region: str, technology: str, domain: Domain) -> Iterator[Adapter]:
        """The adapter on one target, closed afterwards; ``PermanentError`` when it is not configured."""
        adapter = self.open(environment, region, technology, domain)
        if adapter is None:
            conn_id = environment.connection_id(region, technology)
            raise PermanentError(f"{region}/{technology}: connection '{conn_id}' is not configured",
                                 hint=self.how_to_configure(conn_id))
        try:
            yield adapter
        finally:
            adapter.close()


@dataclass(frozen=True)
class Grant:
    """Why a run may go past approval, as verified: from the audit store or the policy, never from what
    a task's XCom claims."""

    changeset_hash: str
    approved_by: tuple[str, ...] = ()  # the people on record (the actor, for break glass)
    override: bool = False             # an emergency override was approved (or broke the glass)
    how: str = "policy"                # policy (nobody needed) | approvals | break_glass


class EnvironmentConnector(Connector):
    """Adapters on the URLs of ``AIRFLOW_CONN_<ID>`` variables: the command line's way to the same
    connection ids Airflow resolves (each adapter owns the client it builds from the URL)."""

    def open(self, environment: Environment, region: str, technology: str, domain: Domain) -> Adapter | None:
        from polymigrate.adapters import adapter_class

        url = url_for(environment.connection_id(region, technology))
        if not url:
            return None
        return adapter_class(technology).from_url(url, domain=domain.name, settings=domain.technologies.get(technology))

    def how_to_configure(self, conn_id: str) -> str:
        return f"export {env_var(conn_id)}=<url>"


def audit_sink(policy: Policy | None, conninfo: Any) -> EventSink:
    """The audit store when one is configured (required where the policy says so), else a NullSink."""
    if not conninfo and not (policy and policy.needs_audit):
        return NullSink()
    from polymigrate.audit import open_sink  # psycopg: imported only when a store is used

    return open_sink(conninfo or None, required=bool(policy and policy.needs_audit))


def event(who: Who, domain: str, environment: str, kind: str, **kw: Any) -> AuditEvent:
    return AuditEvent(kind=kind, domain=domain, environment=environment, actor=who.actor, run_id=who.run_id,
                      dag_id=who.dag_id, task_id=who.task_id, try_number=who.try_number, **kw)


@dataclass
class Run:
    """One run of a verb on one domain in one environment: the scope every gate and event uses."""

    project: Project
    domain: Domain
    catalog: DomainCatalog
    environment: Environment
    params: RunParams
    who: Who
    sink: EventSink
    connector: Connector
    lock_wait_seconds: float | None = None  # None: the policy's
    log: logging.Logger = field(default=LOG)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))

    @property
    def policy(self) -> Policy:
        return self.environment.policy

    def emit(self, kind: str, **kw: Any) -> None:
        self.sink.emit(event(self.who, self.domain.name, self.environment.name, kind, **kw))

    def changeset_hash(self) -> str:
        """What an approval is bound to: every file of the domain and the placeholders here."""
        return bound_changeset_hash(self.domain.name, self.environment, all_migrations(self.domain, self.catalog))

    def regions(self) -> list[Region]:
        """The domain's regions in this environment that the params select, in rollout order."""
        rollout = self.project.rollout_of(self.domain, self.environment)
        regions = [r for r in self.project.regions_of(self.domain, self.environment) if self.params.selects(r.name)]
        if rollout.strategy == "canary" and rollout.canary_region:
            regions.sort(key=lambda r: r.name != rollout.canary_region)
        return regions

    def technologies(self, region: str) -> list[str]:
        return [t for t in self.domain.technology_order() if self.params.selects(region, t)]

    def migrations(self, technology: str) -> list[Migration]:
        """Every file of one technology, undo files included (``undo`` needs them)."""
        return self.catalog.migrations.get(technology, [])

    def run_context(self, region: str, plan_hash: str | None = None) -> RunContext:
        env, policy = self.environment, self.policy
        return RunContext(domain=self.domain.name, environment=env.name, region=region, actor=self.who.actor,
                          run_id=self.who.run_id, task_id=self.who.task_id, try_number=self.who.try_number,
                          dag_id=self.who.dag_id, plan_hash=plan_hash,
                          placeholders={**env.placeholders, **env.regions[region].placeholders},
                          lock_timeout=policy.lock_timeout, statement_timeout=policy.statement_timeout,
                          lock_wait_seconds=policy.lock_wait_seconds if self.lock_wait_seconds is None
                          else self.lock_wait_seconds)

    def target(self, region: str, technology: str):
        """The adapter on one of this run's targets (a context manager)."""
        return self.connector.target(self.environment, region, technology, self.domain)

    def close(self) -> None:
        self.connector.close()
        close = getattr(self.sink, "close", None)
        if callable(close):
            close()


def open_run(root: Any, domain: str, environment: str, *, params: RunParams, who: Who, connector: Connector,
             audit: Callable[[], Any] | None, trigger: dict[str, Any] | None = None, **kw: Any) -> Run:
    """Load the domain in the environment and open the audit sink its policy asks for.

    ``audit`` resolves the audit store's connection (returning None: not configured); ``audit=None``
    records nothing (read-only verbs). With ``trigger``, a ``triggered`` event with those details is
    recorded as soon as the sink is open, before the domain's files are read: a run refused for
    broken files is still on record, with who.
    """
    project = load_project(root)
    env = environment_of(project, environment, root)
    sink = NullSink() if audit is None else audit_sink(env.policy, audit())
    try:
        if trigger is not None:
            sink.emit(event(who, domain, env.name, "triggered", details=trigger))
        project, dom, catalog = load_domain(root, domain, project=project)
    except BaseException:
        close = getattr(sink, "close", None)
        if callable(close):
            close()
        raise
    return Run(project, dom, catalog, env, params, who, sink, connector, **kw)
