"""Typed errors.

Two families matter to callers: ``TransientError`` (worth retrying with backoff: connection
lost, lock timeout, serialization failure) and ``PermanentError`` (retrying cannot help: syntax
error, checksum drift, refused by policy). They are siblings under ``MigrationError``, so
``except PermanentError`` never catches a transient error by accident. The Airflow layer maps the
first to a normal task failure that burns a retry, the second to ``AirflowFailException``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One finding about the input: where it is, what is wrong, how to fix it."""

    file: str
    message: str
    line: int | None = None
    hint: str | None = None
    domain: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" (fix: {self.hint})"
        return text


class PolymigrateError(Exception):
    """Base class of every error polymigrate raises on purpose."""


class SpecError(PolymigrateError):
    """The specs or migration files are invalid; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid specification")


class MigrationError(PolymigrateError):
    """An error while acting on a target, naming the file, line and statement where known, and the fix."""

    def __init__(self, message: str, *, file: str | Path | None = None,
                 statement: str | None = None, line: int | None = None, hint: str | None = None):
        self.file = str(file) if file is not None else None
        self.statement = statement
        self.line = line
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file if self.line is None else f"{self.file}:{self.line}")
        parts.append(self.args[0] if self.args else "")
        text = ": ".join(p for p in parts if p)
        if self.statement:
            stmt = " ".join(self.statement.split())
            text += f"\n  statement: {stmt[:300]}{'…' if len(stmt) > 300 else ''}"
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class PermanentError(MigrationError):
    """Retrying will not help; a person must change something first."""


class DependencyPending(PermanentError):
    """A ``depends_on`` domain has pending migrations on our targets: refused, unless (in Airflow) that
    domain's own DAG is running right now, which the plan then waits for. ``domains``: the ones pending."""

    def __init__(self, message: str, *, domains: list[str], **kw):
        self.domains = domains
        super().__init__(message, **kw)


class TransientError(MigrationError):
    """Worth retrying with backoff (lost connection, lock timeout, serialization failure)."""


class ValidationFailed(PermanentError):
    """The ledger and the files disagree (changed checksum, missing file, out-of-order version)."""


class LockNotAcquired(TransientError):
    """Another run holds the target's migration lock."""

    def __init__(self, message: str, *, holder: str | None = None, **kw):
        self.holder = holder
        super().__init__(message, **kw)


class PolicyRefused(PermanentError):
    """An approval or environment policy forbids this run."""
