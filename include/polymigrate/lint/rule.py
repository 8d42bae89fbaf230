"""The shape every lint rule has: a name, a default severity, a check and a safer alternative."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from polymigrate.lint.source import Source, Statement


@dataclass(frozen=True)
class Hit:
    """A rule firing at one place; unset fields take the rule's defaults."""

    line: int | None
    statement: str = ""
    message: str | None = None
    fix: str | None = None
    severity: str | None = None

    @classmethod
    def at(cls, stmt: Statement, message: str | None = None, **kw) -> "Hit":
        return cls(stmt.line, stmt.short, message, **kw)


@dataclass(frozen=True)
class Rule:
    """One lint rule. ``technology`` is postgresql, mongodb, redis, elasticsearch or ``any``.

    ``squawk`` marks a name shared with Squawk (checked by the parity report); ``impact`` marks a rule
    whose danger grows with the table (lock or rewrite), so a live connection re-scores it.
    """

    name: str
    technology: str
    severity: str
    summary: str
    fix: str
    check: Callable[[Source], Iterable[Hit]]
    destructive: bool = False
    impact: bool = False
    squawk: bool = False
    aliases: tuple[str, ...] = ()

    def applies_to(self, source: Source) -> bool:
        return self.technology in ("any", source.technology)
