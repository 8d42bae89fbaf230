"""Migration file names: which files a technology folder holds (the descriptor's extensions and
naming), their kind, version and description, and the next free version for ``polymigrate new``."""

from __future__ import annotations

import enum
import os
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from polymigrate.adapters import TECHNOLOGIES
from polymigrate.versions import Version

if TYPE_CHECKING:
    from polymigrate.catalog import Migration

EXTENSIONS = {key: t.extensions for key, t in TECHNOLOGIES.items()}
_PG_NAME = re.compile(r"^(?P<prefix>[VUR])(?P<version>[^_]*(?:_[^_]+)*?)__(?P<desc>.+)\.sql$")
_DASH_EXTENSIONS = sorted({e[1:] for t in TECHNOLOGIES.values() if t.naming == "dash" for e in t.extensions})
_DASH_NAME = re.compile(rf"^(?P<version>\d+(?:[._]\d+)*)-(?P<desc>.+)\.(?P<ext>{'|'.join(map(re.escape, _DASH_EXTENSIONS))})$")


class Kind(str, enum.Enum):
    VERSIONED = "versioned"
    REPEATABLE = "repeatable"
    UNDO = "undo"


def parse_name(technology: str, filename: str) -> tuple[Kind, Version | None, str] | None:
    """(kind, version, description) for a migration file name, or None if it is not one.

    Raises ValueError with a fix hint when the extension matches but the name does not.
    """
    ext = os.path.splitext(filename)[1].lower()
    if ext not in EXTENSIONS[technology]:
        return None
    if TECHNOLOGIES[technology].naming == "flyway":
        m = _PG_NAME.match(filename)
        if not m:
            raise ValueError("expected V<version>__<description>.sql, R__<description>.sql or U<version>__<description>.sql")
        prefix, version, desc = m.group("prefix"), m.group("version"), m.group("desc")
        if prefix == "R":
            if version:
                raise ValueError("a repeatable migration has no version: R__<description>.sql")
            return Kind.REPEATABLE, None, desc.replace("_", " ")
        if not version:
            raise ValueError(f"missing version after '{prefix}': {prefix}<version>__<description>.sql")
        return (Kind.UNDO if prefix == "U" else Kind.VERSIONED), Version(version), desc.replace("_", " ")
    m = _DASH_NAME.match(filename)
    if not m:
        raise ValueError(f"expected <version>-<description>{ext} (e.g. 1.2-add-index{ext})")
    return Kind.VERSIONED, Version(m.group("version")), m.group("desc").replace("_", " ").replace("-", " ")


_TIMESTAMP_DIGITS = 12  # yyyymmddHHMM; a single version part this long is taken as a timestamp


def next_version(migrations: list[Migration], now: datetime | None = None) -> str:
    """The next free version, keeping the style: the next major (``1.10`` → ``2``), or, when the
    versions are timestamps (``202401151200``), the current UTC time in the same number of digits."""
    versions = [m.version for m in migrations if m.version is not None]
    if not versions:
        return "1"
    top = max(versions)
    digits = len(str(top.parts[0]))
    if len(top.parts) == 1 and digits >= _TIMESTAMP_DIGITS:
        stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S%f")[:digits]
        return str(max(int(stamp.ljust(digits, "0")), top.parts[0] + 1))
    return str(top.parts[0] + 1)
