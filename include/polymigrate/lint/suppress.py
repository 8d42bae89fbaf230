"""Suppression directives: ``-- polymigrate:lint-ignore <rule>[,<rule>] reason: <text>``.

In the header comment block the directive covers the whole file; anywhere else it covers the
statement that starts on the next line of code. ``#`` and ``//`` work in place of ``--``. JSON has
no comments, so a JSON migration lists file-wide suppressions under a top-level ``"lint_ignore"``:
``[{"rules": ["es-delete-index"], "reason": "…"}]``. A suppression without a reason does not
suppress anything and is itself a finding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DIRECTIVE = re.compile(r"^\s*(?:--|#|//)\s*polymigrate:lint-ignore\b(?P<body>.*)$")
_COMMENT = re.compile(r"^\s*(?:--|#|//)")
_REASON = re.compile(r"\breason:\s*(?P<reason>.*)$", re.I)


@dataclass
class Suppression:
    rules: tuple[str, ...]
    reason: str | None
    line: int
    scope: str                    # "file" | "statement"
    target_line: int | None = None  # first line of the statement it covers
    used: bool = False

    def covers(self, rule: str, first: int | None, last: int | None) -> bool:
        if rule not in self.rules or not self.reason:
            return False
        if self.scope == "file":
            return True
        return first is not None and self.target_line is not None and \
            first <= self.target_line <= (last if last is not None else first)


def parse(text: str, data=None) -> list[Suppression]:
    """Every suppression of a file (``data``: the parsed JSON, if it is a JSON file)."""
    out: list[Suppression] = []
    if isinstance(data, dict) and isinstance(data.get("lint_ignore"), list):
        for item in data["lint_ignore"]:
            if isinstance(item, dict):
                rules = item.get("rules") or []
                rules = [rules] if isinstance(rules, str) else rules
                out.append(Suppression(tuple(str(r) for r in rules), (item.get("reason") or "").strip() or None,
                                       _line_of_key(text, "lint_ignore"), "file"))
    lines = text.splitlines()
    in_header = True
    pending: list[Suppression] = []
    for n, line in enumerate(lines, 1):
        m = _DIRECTIVE.match(line)
        if m:
            body = m.group("body")
            r = _REASON.search(body)
            names = body[: r.start()] if r else body
            reason = (r.group("reason").strip() or None) if r else None
            s = Suppression(tuple(x for x in re.split(r"[,\s]+", names.strip()) if x), reason, n,
                            "file" if in_header else "statement")
            out.append(s)
            if not in_header:
                pending.append(s)
            continue
        if not line.strip() or _COMMENT.match(line):
            continue
        in_header = False
        for s in pending:
            s.target_line = n
        pending = []
    return out


def _line_of_key(text: str, key: str) -> int:
    pos = text.find(f'"{key}"')
    return text.count("\n", 0, pos) + 1 if pos >= 0 else 1
