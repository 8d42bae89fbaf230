"""The spec model: environments (regions, connections, policy) and domains.

Every model forbids unknown keys, so a typo such as ``aprovals:`` is an error naming the file and
line instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polymigrate import TECHNOLOGIES
from polymigrate.errors import Problem
from polymigrate.spec.governance import Label, ResidencyRule, check_label_key

Technology = Literal[TECHNOLOGIES]  # type: ignore[valid-type]  # the registered technologies' keys
Severity = Literal["info", "low", "medium", "high", "critical"]
# release phases, in release order (docs/phases.md); the one definition, which catalog.phases imports
PHASES = ("expand", "migrate", "contract")
Phase = Literal[PHASES]  # type: ignore[valid-type]
SEVERITY_ORDER = ("info", "low", "medium", "high", "critical")
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValueError(f"{what} {value!r} must be lower case letters, digits, '-' or '_', starting with a letter")
    return value


def slug(name: str) -> str:
    """Identifier-safe form of a name (``social-commerce`` → ``social_commerce``)."""
    return name.replace("-", "_")


class ApprovalPolicy(_Model):
    required: int = Field(0, ge=0, description="approvals needed; 0 approves automatically")
    roles: list[str] = Field(default_factory=list, description="roles allowed to approve (empty: any)")
    users: list[str] = Field(default_factory=list, description="users allowed to approve besides the roles")
    triggerer_may_approve: bool = True
    expiry_hours: float | None = Field(None, gt=0)
    high_risk_required: int | None = Field(None, ge=0, description="approvals needed when risk is high")
    high_risk_roles: list[str] = Field(default_factory=list)
    compliance_roles: list[str] = Field(default_factory=list, description=(
        "a regulated change (a labelled column dropped, retyped or moved: docs/governance.md) also needs a "
        "sign-off from one holder of these roles, besides the approvals above; empty: no extra sign-off"))


class Window(_Model):
    days: list[str] = Field(default_factory=lambda: list(_DAYS))
    start: str = "00:00"
    end: str = "23:59"
    timezone: str = "UTC"

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str]) -> list[str]:
        bad = [d for d in v if d.lower()[:3] not in _DAYS]
        if bad:
            raise ValueError(f"unknown day(s) {bad}; use mon, tue, wed, thu, fri, sat, sun")
        return [d.lower()[:3] for d in v]

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not re.match(r"^([01]\d|2[0-3]):[0-5]\d$", v):
            raise ValueError(f"time {v!r} must be HH:MM (24-hour)")
        return v


class Rollout(_Model):
    strategy: Literal["sequential", "parallel", "canary"] = "sequential"
    canary_region: str | None = None
    halt_on_failure: bool = True


class Emergency(_Model):
    cli: bool = Field(False, description="break glass from the command line: `--emergency-override --reason …` runs "
                                         "without the approvals (nobody can approve there) and past the gates an "
                                         "override passes, recorded as 'overridden' with who and why")


class Policy(_Model):
    approvals: ApprovalPolicy = ApprovalPolicy()
    window: Window | None = None
    rollout: Rollout = Rollout()
    lint_block_at: Severity = "high"
    destructive_allowed: bool = True
    schedule: str | None = Field(None, description="cron or preset (e.g. '0 2 * * *', '@daily'), in UTC; none: manual")
    start_unpaused: bool = Field(True, description="a scheduled DAG starts unpaused, so the schedule runs without "
                                                   "someone unpausing it first (false: paused until unpaused)")
    promotion_from: str | None = Field(None, description="environment whose ledgers must show success first")
    rehearsal_from: str | None = Field(None, description="environment whose ledgers give the durations a window is "
                                                         "checked against (default: promotion_from)")
    audit_required: bool = Field(False, description="every run must be recorded in the audit store; without it a run "
                                                    "fails before touching a target (always so where approvals are required)")
    emergency: Emergency = Emergency()
    lock_timeout: str = "10s"
    statement_timeout: str | None = None
    contract_soak_minutes: float = Field(0, ge=0, description="a release's contract phase starts only this long "
                                         "after its earlier phases verified in the region (docs/phases.md)")
    contract_approval: bool = Field(False, description="a release's contract phase in each region waits, after "
                                    "its earlier phases verified there, for a separate approval by the people "
                                    "`approvals` names (at least one; docs/phases.md)")
    lock_wait_seconds: float = Field(300, ge=0, description="how long to wait for another run's migration lock")
    dropped_index_min_scans: int = Field(1, ge=1, description=(
        "verify flags an index a migration dropped that the workload used at least this many times before "
        "(pg_stat_user_indexes; docs/observability.md#performance-impact); it fails or warns as verify_failures says"))
    verify_failures: Literal["fail", "warn"] = Field("fail", description=(
        "what a failed built-in check of the verify step does (INVALID index, NOT VALID constraint, alias "
        "elsewhere than the ledger says, declared index missing, cursor not finished): fail the region, or warn "
        "and record it. A ledger that disagrees with the plan always fails"))
    drift_schedule: str | None = Field("0 3 * * *", description=(
        "when the drift__<environment> DAG compares every target with its last recorded snapshot (cron, UTC); "
        "null: no drift DAG for this environment"))
    retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(30, ge=0)
    residency: list[ResidencyRule] = Field(default_factory=list, description=(
        "label kinds forbidden in regions or jurisdictions: plan refuses a change touching such data there"))

    @property
    def needs_audit(self) -> bool:
        """Runs must be recorded; approvals are verified from the audit store, so requiring them requires it."""
        return self.audit_required or self.approvals.required > 0 or self.contract_approval

    @property
    def rehearsal(self) -> str | None:
        """The environment whose successful runs estimate how long a migration takes here."""
        return self.rehearsal_from or self.promotion_from

    @property
    def constrains_runs(self) -> bool:
        """Anything beyond running what is pending: an ad hoc run against these targets would skip it."""
        return bool(self.needs_audit or self.window or self.promotion_from or not self.destructive_allowed)


NotifyEvent = Literal["run_failed", "rehearsal_failed", "verify_failed", "approval_requested", "production_completed",
                      "override_used", "drift_found", "recovered"]


class Notify(_Model):
    """Where a domain's or an environment's messages go (docs/observability.md). Addresses are not
    secrets; the webhook URLs are, so they live in Airflow connections and only their ids are here."""

    email: list[str] = Field(default_factory=list, description="addresses besides the domain's owners")
    webhooks: list[str] = Field(default_factory=list, description=(
        "Airflow connection ids of Slack-compatible incoming webhooks (slackwebhook connections)"))
    events: list[NotifyEvent] | None = Field(None, description="only these events reach this route (default: all)")
    owners: bool = Field(True, description="environment only: whether the domains' owners are e-mailed here")
    smtp_conn_id: str | None = Field(None, description="environment only: the SMTP connection (default smtp_default)")


class Region(_Model):
    name: str
    display_name: str | None = None
    connections: dict[Technology, str] = Field(default_factory=dict)
    placeholders: dict[str, str] = Field(default_factory=dict)
    technologies: list[Technology] | None = Field(
        None, description="technologies this region has servers for (default: the environment's)")
    jurisdictions: list[str] = Field(default_factory=list, description=(
        "data-protection regimes the region's data falls under (GDPR, POPIA …): the compliance report's "
        "regulations, and what residency rules may name"))
    queue: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.:-]{1,100}$",
        description="the Celery (or Kubernetes) queue of the workers that can reach this region's targets; "
                    "default: Airflow's default queue, any worker")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "region")

    @property
    def title(self) -> str:
        return self.display_name or self.name.replace("_", " ").replace("-", " ").title()


class Environment(_Model):
    name: str
    description: str = ""
    regions: dict[str, Region]
    policy: Policy = Policy()
    placeholders: dict[str, str] = Field(default_factory=dict)
    connection_id_template: str = "polymigrate_{technology}_{environment}_{region}"
    technologies: list[Technology] | None = Field(
        None, description="technologies this environment has servers and connections for (default: all)")
    notify: Notify = Field(default_factory=Notify, description="every domain's messages in this environment also "
                           "go here (e.g. production's on-call)")
    left_out: dict[str, str] = Field(
        default_factory=dict, description="what these specs leave out for this environment, and why: a technology "
        "it does not serve ('elasticsearch') or a file removed from this copy of the specs "
        "('<domain>/<technology>/<script>'); each reason is said in the plan's log")
    path: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "environment")

    @model_validator(mode="after")
    def _canary(self) -> "Environment":
        r = self.policy.rollout
        if r.canary_region and r.canary_region not in self.regions:
            raise ValueError(f"rollout.canary_region {r.canary_region!r} is not one of the regions {sorted(self.regions)}")
        return self

    def connection_id(self, region: str, technology: str) -> str:
        explicit = self.regions[region].connections.get(technology)  # type: ignore[call-overload]
        if explicit:
            return explicit
        return self.connection_id_template.format(
            technology=technology, environment=self.name, region=region
        )


class TechnologyConfig(_Model):
    path: str | None = Field(None, description="folder of the migrations, relative to the domain (default: the technology name)")
    schema_: str | None = Field(None, alias="schema", description="PostgreSQL schema the migrations run in (search_path)")
    ledger: str | None = Field(None, description="ledger table / collection / key / index name override")
    database: str | None = Field(None, description="MongoDB database")
    key_prefix: str | None = Field(None, description="Redis key prefix the migrations own")
    index_prefix: str | None = Field(None, description="Elasticsearch index prefix")
    batch_size: int | None = Field(None, gt=0)
    pause_ms: int | None = Field(None, ge=0)
    allow_not_valid: list[str] = Field(default_factory=list, description=(
        "PostgreSQL constraints left NOT VALID on purpose ('table.constraint' or fnmatch patterns): the verify "
        "step fails on any other NOT VALID constraint"))
    phases: list[Phase] | None = Field(None, min_length=1, description=(
        "the release phases this technology's files are in (docs/phases.md): the DAG has a task per declared "
        "phase, and validate refuses a file whose phase is not listed; none declared by any technology: "
        "one block per technology"))

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("phases")
    @classmethod
    def _phases(cls, v: list[str] | None) -> list[str] | None:
        # release order whatever order they are written in: the DAG runs them in that order anyway
        return None if v is None else [p for p in PHASES if p in v]


class DriftSpec(_Model):
    allow: list[str] = Field(default_factory=list, description=(
        "objects changed by hand on purpose, never reported as drift: fnmatch patterns over "
        "'<technology>:<object>' (e.g. 'postgresql:indexes.manual_*', 'elasticsearch:index_templates.ops-*'); "
        "without a 'technology:' prefix a pattern applies to every technology"))


class Domain(_Model):
    name: str
    description: str = ""
    owners: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    technologies: dict[Technology, TechnologyConfig] = Field(default_factory=dict)
    order: list[Technology] = Field(default_factory=lambda: list(TECHNOLOGIES))
    environments: list[str] | None = Field(None, description="subset of environments (default: all)")
    regions: list[str] | None = Field(None, description="subset of regions (default: all of the environment)")
    rollout: Rollout | None = None
    drift: DriftSpec = DriftSpec()
    notify: Notify = Field(default_factory=Notify, description="this domain's routes besides its owners' e-mail")
    labels: dict[str, Label] = Field(default_factory=dict, description=(
        "classification of columns, fields, key patterns and index fields: '<technology>:<object>' → "
        "{kind, level, retention} (docs/governance.md)"))
    path: str = ""

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, Label]) -> dict[str, Label]:
        for key in v:
            check_label_key(key)
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "domain")

    @property
    def slug(self) -> str:
        return slug(self.name)

    def technology_order(self) -> list[str]:
        used = list(self.technologies)
        ordered = [t for t in self.order if t in used]
        return ordered + [t for t in TECHNOLOGIES if t in used and t not in ordered]

    def declared_phases(self) -> dict[str, list[str]] | None:
        """Per technology, the phases ``technologies.<t>.phases`` declares (release order; ``expand``
        where a technology declares none); None when no technology declares any (one block per
        technology). The DAG's shape follows this, so parse reads no migration file (issue 24);
        validate holds the files to it (``catalog.undeclared_phase_problems``)."""
        if not any(cfg.phases for cfg in self.technologies.values()):
            return None
        return {t: list(self.technologies[t].phases or ["expand"]) for t in self.technology_order()}  # type: ignore[index]

    def technology_dir(self, technology: str) -> Path:
        cfg = self.technologies.get(technology)  # type: ignore[call-overload]
        return Path(self.path) / ((cfg.path if cfg and cfg.path else None) or technology)


@dataclass
class Project:
    """What ``load_project`` returns: the good parts plus every problem found."""

    root: Path
    environments: dict[str, Environment] = field(default_factory=dict)
    domains: dict[str, Domain] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    broken_domains: dict[str, list[Problem]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def environments_of(self, domain: Domain) -> list[Environment]:
        names = domain.environments or list(self.environments)
        return [self.environments[n] for n in names if n in self.environments]

    def regions_of(self, domain: Domain, environment: Environment) -> list[Region]:
        names = domain.regions or list(environment.regions)
        return [environment.regions[n] for n in names if n in environment.regions]

    def rollout_of(self, domain: Domain, environment: Environment) -> Rollout:
        return domain.rollout or environment.policy.rollout
