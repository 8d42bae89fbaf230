"""Data governance in the specs: classification labels (domain.yaml), jurisdictions (regions) and
residency rules (environment policy). Pure models; what they mean at lint, approval, plan and
verify is ``polymigrate.governance``.

A label is keyed ``<technology>:<object>``:

* ``postgresql:users.email`` — a column (``table.column``, the table as the domain's files name it);
* ``mongodb:activity_feed.user_id`` — a field (``collection.field``, dotted for sub-documents);
* ``redis:user_profile:*`` — a key pattern (fnmatch, after the domain's ``key_prefix``);
* ``elasticsearch:people.email`` — an index field (``index_or_alias.field``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LabelKind = Literal["pii", "pci", "secret", "public"]
LabelLevel = Literal["low", "medium", "high", "critical"]
LEVEL_ORDER = ("low", "medium", "high", "critical")
LABEL_TECHNOLOGIES = ("postgresql", "mongodb", "redis", "elasticsearch")
_RETENTION = re.compile(r"^\s*(\d+)\s*(d|w|m|y)\s*$", re.I)
_UNIT_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}


def retention_days(text: str) -> int:
    """``30d``, ``12w``, ``6m`` (30 days each), ``7y`` → days; ValueError names the accepted forms."""
    m = _RETENTION.match(text or "")
    if not m:
        raise ValueError(f"retention {text!r} must be a number and a unit: 30d, 12w, 6m or 7y")
    return int(m.group(1)) * _UNIT_DAYS[m.group(2).lower()]


class Label(BaseModel):
    """What one column, field, key pattern or index field holds, and how long it may be kept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: LabelKind
    level: LabelLevel = "medium"
    retention: str | None = Field(None, description=(
        "how long the data may be kept (30d, 12w, 6m, 7y); verify checks something real enforces it: a TTL "
        "index (MongoDB), key TTLs (Redis), an ISM policy (OpenSearch), a purge function (PostgreSQL, "
        "`purged_by`)"))
    purged_by: str | None = Field(None, description=(
        "PostgreSQL: the function (schema.name) a scheduled job calls to delete rows past retention; verify "
        "checks it exists"))
    note: str = ""

    @field_validator("retention")
    @classmethod
    def _retention(cls, v: str | None) -> str | None:
        if v is not None:
            retention_days(v)
        return v

    @property
    def retention_days(self) -> int | None:
        return retention_days(self.retention) if self.retention else None

    def at_least_as_protected_as(self, other: "Label") -> bool:
        """Carrying ``other``'s data here keeps its protection: same kind, a level no lower."""
        return self.kind == other.kind and LEVEL_ORDER.index(self.level) >= LEVEL_ORDER.index(other.level)


def check_label_key(key: str) -> str:
    technology, sep, obj = key.partition(":")
    if not sep or technology not in LABEL_TECHNOLOGIES or not obj.strip():
        raise ValueError(f"label key {key!r} must be '<technology>:<object>' with technology one of "
                         f"{', '.join(LABEL_TECHNOLOGIES)} (e.g. 'postgresql:users.email', 'redis:user_profile:*')")
    if technology in ("postgresql", "mongodb", "elasticsearch") and "." not in obj:
        raise ValueError(f"label key {key!r}: name the {'column' if technology == 'postgresql' else 'field'} "
                         "as '<table, collection or index>.<name>'")
    return key


class ResidencyRule(BaseModel):
    """Data of these label kinds may not be placed in these regions (or jurisdictions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    forbid: list[LabelKind] = Field(min_length=1)
    regions: list[str] = Field(default_factory=list, description="regions where it is forbidden")
    jurisdictions: list[str] = Field(default_factory=list, description="…or every region under these jurisdictions")
    reason: str = ""

    def applies_to(self, region: str, jurisdictions: list[str]) -> bool:
        return region in self.regions or bool(set(self.jurisdictions) & set(jurisdictions))
