"""Flyway-compatible migration versions.

``1.2.10`` sorts after ``1.2.9``; ``.`` and ``_`` both separate parts; each part is compared as an
integer of any size, so 12-digit timestamps order correctly; trailing zero parts do not count
(``1.0`` equals ``1``), exactly as Flyway's ``MigrationVersion``.
"""

from __future__ import annotations

import re
from functools import total_ordering

_VALID = re.compile(r"^\d+([._]\d+)*$")


@total_ordering
class Version:
    __slots__ = ("text", "parts", "_key")

    def __init__(self, text: str):
        if not _VALID.match(text or ""):
            raise ValueError(
                f"invalid version {text!r}: use digits separated by '.' or '_' (e.g. 1, 1.2, 2024_01_15_1200)"
            )
        self.text = text.replace("_", ".")
        self.parts = tuple(int(p) for p in re.split(r"[._]", text))
        key = list(self.parts)
        while len(key) > 1 and key[-1] == 0:
            key.pop()
        self._key = tuple(key)

    @classmethod
    def parse(cls, text: str) -> "Version":
        return cls(text)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            other = Version(other)
        if not isinstance(other, Version):
            return NotImplemented
        return self._key == other._key

    def __lt__(self, other: "Version") -> bool:
        if isinstance(other, str):
            other = Version(other)
        return self._key < other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Version({self.text!r})"
