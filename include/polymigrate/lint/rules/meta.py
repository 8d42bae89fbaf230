"""Rules about the files and the lint directives themselves."""

from __future__ import annotations

from polymigrate.lint import suppress
from polymigrate.lint.rule import Hit, Rule


def _missing_reason(src):
    for s in suppress.parse(src.text, src.data):
        if not s.reason:
            yield Hit(s.line, f"lint-ignore {','.join(s.rules)}",
                      f"suppression of {', '.join(s.rules) or 'nothing'} has no reason, so it suppresses nothing")


def _engine(src):
    """Produced by the engine, which sees every finding (unused suppressions) or the whole catalog."""
    return ()


RULES = (
    Rule("suppression-missing-reason", "any", "high", "every lint-ignore must say why",
         "-- polymigrate:lint-ignore <rule> reason: <why this is safe here>", _missing_reason),
    Rule("unknown-rule-in-suppression", "any", "medium", "a lint-ignore names a rule that does not exist",
         "use a rule name from `polymigrate lint --rules` (docs/lint.md)", _engine),
    Rule("unused-suppression", "any", "info", "a lint-ignore that suppresses nothing (stale or misplaced)",
         "put it on the line(s) just before the statement, or delete it", _engine),
    Rule("version-collision", "any", "high",
         "two migration files share a version, in the tree or on another local git branch",
         "renumber this file to the next free version (`polymigrate new` picks one) before merging", _engine),
)
