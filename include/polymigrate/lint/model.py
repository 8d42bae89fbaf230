"""What lint produces: findings, per-statement impact estimates and the report approval reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from polymigrate.spec.models import SEVERITY_ORDER

# "unknown": lint was connected but could not size what a statement touches (a table not found on the
# target). It ranks above high and fails closed: approval escalates as for high; only a known
# critical outranks it.
RISK_LEVELS = ("low", "medium", "high", "unknown", "critical")


def severity_rank(severity: str) -> int:
    """Position of a severity in ``SEVERITY_ORDER``; ValueError names the valid ones."""
    try:
        return SEVERITY_ORDER.index(severity)
    except ValueError:
        raise ValueError(f"unknown severity {severity!r}; use one of {', '.join(SEVERITY_ORDER)}") from None


def max_level(levels, order=SEVERITY_ORDER, default: str | None = None) -> str | None:
    """The highest of ``levels`` in ``order`` (``default`` when there are none)."""
    best = default
    for level in levels:
        if best is None or order.index(level) > order.index(best):
            best = level
    return best


def risk_of(severity: str) -> str:
    """A severity as a risk level (``info`` counts as ``low``)."""
    return "low" if severity == "info" else severity


@dataclass
class Finding:
    """One diagnostic: which rule, where, why it matters and what to write instead."""

    rule: str
    severity: str
    message: str
    file: str
    line: int | None
    statement: str = ""
    fix: str = ""
    suppressed: bool = False
    suppression_reason: str | None = None
    destructive: bool = False
    technology: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: [{self.severity}] {self.rule}: {self.message}"
        if self.fix:
            text += f" (fix: {self.fix})"
        return text


@dataclass
class Impact:
    """Estimated cost of one statement on one table of the target (or from the statement alone)."""

    file: str
    line: int
    statement: str
    table: str | None
    lock: str | None        # PostgreSQL lock mode taken on the table, e.g. "ACCESS EXCLUSIVE"
    work: str               # "rewrite" | "scan" | "index" | "rows" | "metadata" | "none"
    rows: float | None = None
    bytes: int | None = None
    seconds: float | None = None   # estimated time the lock is held; None without statistics
    risk: str = "low"
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LintReport:
    """Everything the validate task reports and the approval policy decides on."""

    findings: list[Finding] = field(default_factory=list)
    impacts: list[Impact] = field(default_factory=list)
    files: int = 0
    connected: bool = False

    @property
    def max_severity(self) -> str | None:
        """Highest severity among unsuppressed findings, None when there are none."""
        return max_level(f.severity for f in self.findings if not f.suppressed)

    @property
    def risk(self) -> str:
        """low | medium | high | unknown | critical: the worst statement impact or unsuppressed finding."""
        levels = [i.risk for i in self.impacts]
        levels += [risk_of(f.severity) for f in self.findings if not f.suppressed]
        return max_level(levels, RISK_LEVELS, "low")

    @property
    def destructive(self) -> bool:
        """True when any change loses data or breaks readers (drop, truncate, rename), suppressed or not."""
        return any(f.destructive for f in self.findings)

    def blocking(self, threshold: str) -> list[Finding]:
        """Unsuppressed findings at or above ``threshold``."""
        floor = severity_rank(threshold)
        return [f for f in self.findings if not f.suppressed and severity_rank(f.severity) >= floor]

    @property
    def suppressions(self) -> list[dict]:
        """Suppressed findings with their reasons, for the approval summary."""
        return [{"rule": f.rule, "file": f.file, "line": f.line, "reason": f.suppression_reason,
                 "statement": f.statement} for f in self.findings if f.suppressed]

    def extend(self, other: "LintReport") -> None:
        self.findings += other.findings
        self.impacts += other.impacts
        self.files += other.files
        self.connected = self.connected or other.connected

    def to_dict(self) -> dict:
        return {"max_severity": self.max_severity, "risk": self.risk, "destructive": self.destructive,
                "files": self.files, "connected": self.connected,
                "counts": {s: sum(1 for f in self.findings if f.severity == s and not f.suppressed)
                           for s in SEVERITY_ORDER},
                "findings": [f.to_dict() for f in self.findings],
                "suppressions": self.suppressions,
                "impacts": [i.to_dict() for i in self.impacts]}
