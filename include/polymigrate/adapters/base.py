"""The adapter protocol every technology implements, all in the same shape.

An adapter is given a ready client (built by the Airflow layer through a provider hook, or by the
CLI from a URL) and never reads Airflow connections itself. Five members are abstract (``target``,
``lock``, ``read_ledger``, ``apply``, ``snapshot``); the others have defaults (nothing to do, or a
``PermanentError`` saying the technology cannot) that an adapter overrides where its engine can do more:

* ``lock(owner, wait_seconds)``: the target's migration lock, as a context manager; raises
  ``LockNotAcquired`` naming the holder when it cannot be had in time;
* ``read_ledger()``: the ledger rows for this domain, creating the ledger if absent;
* ``apply(migration, body, ctx, resume)``: run one migration and record it in the ledger, atomically
  where the engine allows, otherwise ``started`` before and ``success`` after with ``progress`` in
  between so a retry resumes (``resume`` is the incomplete row, if any);
* ``preflight(items)``: refuse a run before anything is applied (optional);
* ``undo``, ``baseline``, ``repair``: the maintenance verbs (raise ``PermanentError`` when not
  supported, as ``capabilities`` says);
* ``adopt(ctx, migrations, source)``: copy the history of the tool the target was migrated with
  before (Flyway, migrate-mongo; ``capabilities.adopts`` names it) into the ledger;
* ``snapshot()``: a JSON-able picture of the live schema, for drift detection;
* ``health_checks(ctx, migrations)``: what the verify step proves beyond the ledger (no INVALID
  index, aliases where the ledger says, indexes as declared, cursors finished), as ``Check``s;
* ``target``: a description of the target without credentials;
* also ``from_url`` (the CLI's way in) and ``close``; ``inline_undo``, ``undo_blocker``,
  ``undo_recorded`` and ``expire_retained`` (undo without a ``U`` file, and what it retains);
  ``run_expectations`` (the domain's expectation suites, for verify).

Errors are classified by the adapter: ``TransientError`` for what a retry may fix, otherwise
``PermanentError`` naming the file and statement.
"""

from __future__ import annotations

import abc
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from polymigrate.ledger import LedgerEntry, RunContext, Status

if TYPE_CHECKING:  # annotations only: the catalog builds its extensions from polymigrate.adapters
    from polymigrate.catalog import Migration


NEEDS_UNDO_FILE = "needs an undo file"  # ``undo_blocker`` of adapters that only undo through U files


@dataclass(frozen=True)
class Capabilities:
    """What the adapter can do: the executor reads ``reversible`` (undo's refusal), ``verbs.adopt``
    reads ``adopts``, and the conformance suite (tests/conformance) exercises each declared one and
    skips, naming it, what is not declared."""

    transactional: bool  # a migration and its ledger row commit together
    reversible: bool     # undo files are supported
    resumable: bool      # a long migration records progress and a retry continues from it
    adopts: str | None = None  # the other tool whose history ``adopt`` copies (flyway, migrate-mongo)


@dataclass
class Applied:
    """What ``apply`` reports back to the executor."""

    execution_time_ms: int
    statements: int = 0
    details: dict[str, Any] | None = None
    # the datasets the file changed (polymigrate.lineage.Changed), from the adapter's own parse of it;
    # None: the executor reads the file for them
    changed: list[Any] | None = None


@dataclass(frozen=True)
class Check:
    """One built-in verification of a target after a run: what was checked, whether it held, and
    what a person needs to act on it when it did not."""

    name: str          # short and stable: "invalid indexes", "alias products"
    ok: bool
    detail: str = ""   # what was found (failing: the objects and the fix)
    technology: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "technology": self.technology}

    def __str__(self) -> str:
        return f"{self.technology + ': ' if self.technology else ''}{self.name}: {'ok' if self.ok else 'FAILED'}" \
               + (f" ({self.detail})" if self.detail else "")


@dataclass
class RepairReport:
    realigned: list[str]
    removed: list[str]


@dataclass
class AdoptReport:
    """What ``adopt`` copied into the ledger from another tool's history."""

    source: str    # where that history was read (schema.table, database.collection)
    imported: int  # rows copied; 0 when it was adopted before
    already: list[str] = field(default_factory=list)  # files the ledger held already
    changed: list[str] = field(default_factory=list)  # applied from other contents: the next run stops until repair
    missing: list[str] = field(default_factory=list)  # in the history, no such file here


class Adapter(abc.ABC):
    technology: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    def __init__(self, client: Any, *, domain: str, settings: Any = None):
        self.client = client
        self.domain = domain
        self.settings = settings

    @classmethod
    def from_url(cls, url: str, *, domain: str, settings: Any = None) -> "Adapter":
        """An adapter owning a client built from a URL (the CLI's way in); ``close`` releases it."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from a URL")

    @property
    @abc.abstractmethod
    def target(self) -> str: ...

    @abc.abstractmethod
    def lock(self, owner: str, wait_seconds: float) -> AbstractContextManager[None]: ...

    @abc.abstractmethod
    def read_ledger(self) -> list[LedgerEntry]: ...

    @abc.abstractmethod
    def apply(self, migration: Migration, body: str, ctx: RunContext, resume: LedgerEntry | None = None) -> Applied: ...

    @abc.abstractmethod
    def snapshot(self) -> dict[str, Any]: ...

    def preflight(self, items: list[tuple[Migration, str]]) -> None:
        """Refuse a run before anything is applied (``(migration, rendered body)`` of every file the run
        would apply): e.g. a command the server lacks, a module that is not installed. Default: nothing."""

    def inline_undo(self, migration: Migration) -> bool:
        """True when ``migration`` carries its own undo (MongoDB ``down``), so ``undo`` takes the
        versioned file itself instead of a ``U`` file."""
        return False

    def undo(self, undo_migration: Migration, body: str, ctx: RunContext) -> Applied:
        from polymigrate.errors import PermanentError
        raise PermanentError(f"{self.technology} migrations cannot be undone", hint="write a new forward migration")

    def undo_blocker(self, entry: LedgerEntry) -> str | None:
        """Why ``undo_recorded`` cannot revert ``entry`` from what the adapter recorded when it ran
        (None: it can). Adapters whose changes carry their own inverse (Elasticsearch: an alias
        switch back to the retained index) override this and ``undo_recorded``; the others need
        an undo file."""
        return NEEDS_UNDO_FILE

    def undo_recorded(self, entry: LedgerEntry, ctx: RunContext) -> Applied:
        from polymigrate.errors import PermanentError
        raise PermanentError(f"{self.technology} cannot undo {entry.script} without an undo file")

    def expire_retained(self, ctx: RunContext, *, now: Any = None, dry_run: bool = False) -> list[str]:
        """Delete what earlier migrations kept for undo once its retention passed (Elasticsearch: the
        index a blue-green switch left); the names. Nothing to do for most technologies."""
        return []

    def health_checks(self, ctx: RunContext, migrations: list[Migration]) -> list[Check]:
        """Built-in checks of the live target after a run (``migrations``: the applicable files, so
        what they declare can be compared with what is there). Read-only; every adapter has them."""
        return []

    def run_expectations(self, suites: list[Any]) -> list[Check]:
        """Run the domain's expectation suites bound to this target (``polymigrate.expectations``),
        one ``Check`` per expectation. Default: the technology runs none, each suite says so."""
        return [Check(f"expectations {s.name}", False, f"{s.path}: {self.technology} suites are not run yet",
                      technology=self.technology) for s in suites]

    def _expectation_checks(self, outcomes: list[Any]) -> list[Check]:
        """One verify check per expectation outcome (``polymigrate.expectations.Outcome``)."""
        return [Check(f"expectation {o.suite}: {o.expectation}", o.ok, o.detail, technology=self.technology)
                for o in outcomes]

    def baseline(self, version: str, description: str, ctx: RunContext) -> None:
        from polymigrate.errors import PermanentError
        raise PermanentError(f"baseline is not supported for {self.technology}")

    def _baseline_wanted(self, version: str, where: str) -> bool:
        """Whether ``baseline(version)`` has a row to write: False when the ledger already holds that
        baseline (so a retried baseline is a no-op); refused when it holds anything else."""
        from polymigrate.errors import PermanentError
        live = [e for e in self.read_ledger() if e.status is not Status.DELETED]
        if any(e.status is Status.BASELINE and e.version == version for e in live):
            return False
        if live:
            raise PermanentError(f"cannot baseline {self.domain} at {version}: the ledger already has "
                                 f"{len(live)} row(s) (latest {live[-1].script})", file=where,
                                 hint="baseline only a target polymigrate has never migrated; use repair otherwise")
        return True

    def repair(self, migrations: list[Migration], ctx: RunContext) -> RepairReport:
        from polymigrate.errors import PermanentError
        raise PermanentError(f"repair is not supported for {self.technology}")

    def adopt(self, ctx: RunContext, migrations: list[Migration], *, source: str | None = None) -> AdoptReport:
        """Copy the history of ``capabilities.adopts`` (at ``source``, else where that tool keeps it by
        default) into the ledger, so nothing it applied runs again; adopting twice is a no-op. Called
        under ``lock``."""
        from polymigrate.errors import PermanentError
        raise PermanentError(f"{self.technology} adopts no other tool's history",
                             hint="adopt a Flyway history into PostgreSQL or a migrate-mongo changelog into MongoDB; "
                                  "elsewhere, `polymigrate baseline --version V`")

    def close(self) -> None:
        """Release what the adapter opened itself (not the client it was given)."""


@contextmanager
def holding(stack: list[Any], lease: Any) -> Iterator[None]:
    """Keep an acquired lease on the adapter's ``stack`` while the block runs (the ledger writes in it
    fence with the top one) and release it afterwards, also when the block fails."""
    stack.append(lease)
    try:
        yield
    finally:
        lease.release()
        if lease in stack:
            stack.remove(lease)
