"""A migration file's header: the ``-- polymigrate: key=value`` directives (``#`` and ``//`` too),
a JSON file's ``"phase"``, and what validate can say of a backfill without a server."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from polymigrate.catalog.naming import Kind
from polymigrate.catalog.phases import PHASES
from polymigrate.errors import PolymigrateError, Problem

_DIRECTIVE = re.compile(r"^\s*(?:--|#|//)\s*polymigrate:\s+(?P<body>.*)$")
_COMMENT = re.compile(r"^\s*(?:--|#|//)")
_PLACEHOLDER = re.compile(r"\$\{(?P<name>[A-Za-z_][\w.:-]*)\}")
_DURATION = re.compile(r"^\d+(\.\d+)?\s*(ms|s|min|h)?$")
_IDENT = re.compile(r'^(?:[A-Za-z_][A-Za-z0-9_$]*|"[^"]+")$')


@dataclass(frozen=True)
class Directives:
    """Per-file options from the header comment."""

    transactional: bool | None = None  # None: let the adapter decide (e.g. by parsing the SQL)
    lock_timeout: str | None = None
    statement_timeout: str | None = None
    batch_size: int | None = None
    pause_ms: int | None = None
    # zero-downtime releases (docs/phases.md): the release phase this file belongs to
    phase: str | None = None
    # a PostgreSQL backfill (docs/postgresql.md#backfills): the file's one UPDATE runs in keyset batches
    backfill: bool | None = None
    key: str | None = None
    batch_time: str | None = None
    max_batch: int | None = None
    max_lag: str | None = None

    KEYS = ("transactional", "lock_timeout", "statement_timeout", "batch_size", "pause_ms", "phase",
            "backfill", "key", "batch_time", "max_batch", "max_lag")


def parse_directives(text: str, file: str, domain: str | None = None) -> tuple[Directives, list[Problem]]:
    values: dict = {}
    problems: list[Problem] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if not _COMMENT.match(line):
            break  # directives live in the header only
        m = _DIRECTIVE.match(line)
        if not m:
            continue
        for item in filter(None, re.split(r"[,\s]+", m.group("body").strip())):
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            if key not in Directives.KEYS or not sep:
                problems.append(Problem(file, f"unknown directive '{item}'", line=lineno, domain=domain,
                                        hint=f"use key=value with one of {', '.join(Directives.KEYS)}"))
                continue
            if key in ("transactional", "backfill"):
                if value.lower() not in ("true", "false"):
                    problems.append(Problem(file, f"{key}={value}", line=lineno, domain=domain, hint="use true or false"))
                    continue
                values[key] = value.lower() == "true"
            elif key == "phase":
                if value.lower() not in PHASES:
                    problems.append(Problem(file, f"unknown phase '{value}'", line=lineno, domain=domain,
                                            hint=f"use one of {', '.join(PHASES)} (docs/phases.md)"))
                    continue
                values[key] = value.lower()
            elif key == "key":
                if not _IDENT.match(value):
                    problems.append(Problem(file, f"key={value} is not a column name", line=lineno, domain=domain,
                                            hint="name one column of the table, e.g. key=id"))
                    continue
                values[key] = value[1:-1] if value.startswith('"') else value.lower()
            elif key in ("batch_size", "pause_ms", "max_batch"):
                if not value.isdigit():
                    problems.append(Problem(file, f"{key}={value} is not a whole number", line=lineno, domain=domain))
                    continue
                values[key] = int(value)
            else:
                if not _DURATION.match(value):
                    problems.append(Problem(file, f"{key}={value} is not a duration", line=lineno, domain=domain,
                                            hint="e.g. 500ms, 5s, 10min, 1h"))
                    continue
                values[key] = value
    return Directives(**values), problems


_BACKFILL_ONLY = ("key", "batch_time", "max_batch", "max_lag")


def _check_backfill(technology: str, kind: Kind, d: Directives, body: str, path: Path, domain: str) -> list[Problem]:
    """What validate can say about a backfill file without a server (the table is checked when it runs)."""
    file = str(path)
    stray = [k for k in _BACKFILL_ONLY if getattr(d, k) is not None]
    if not d.backfill:
        return [Problem(file, f"{', '.join(stray)} only apply to a backfill", line=1, domain=domain,
                        hint="add backfill=true to the header, or remove them")] if stray else []
    if technology != "postgresql":
        return [Problem(file, f"backfill=true is for PostgreSQL files; {technology} has its own way", line=1,
                        domain=domain, hint="MongoDB: ctx.transform in a .py migration (docs/mongodb.md); "
                                            "Elasticsearch: a reindex step")]
    if kind is not Kind.VERSIONED:
        return [Problem(file, f"a {kind.value} file cannot be a backfill", line=1, domain=domain,
                        hint="make it a versioned V<version>__<description>.sql file")]
    if d.transactional:
        return [Problem(file, "a backfill runs in many short transactions; transactional=true contradicts it",
                        line=1, domain=domain, hint="remove transactional=true")]
    if _PLACEHOLDER.search(body):
        return []  # parsed when it runs, with the values filled in
    from polymigrate.adapters.postgresql.backfill import parse  # pglast: only for the files that need it
    try:
        parse(body, path)
    except PolymigrateError as exc:
        return [Problem(file, exc.args[0], line=getattr(exc, "line", None), domain=domain,
                        hint=getattr(exc, "hint", None))]
    return []


_JSON_PHASE = re.compile(r'"phase"\s*:\s*"(?P<phase>[A-Za-z]+)"')


def json_phase(text: str) -> str | None:
    """The top-level ``"phase"`` of a JSON migration (validated by its format model). A text that
    does not parse: the first ``"phase": "…"`` in it."""
    try:
        data = json.loads(_PLACEHOLDER.sub("0", text))
    except ValueError:
        m = _JSON_PHASE.search(text)
        return m.group("phase").lower() if m else None
    phase = data.get("phase") if isinstance(data, dict) else None
    return phase.lower() if isinstance(phase, str) else None

