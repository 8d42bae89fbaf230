"""The one list of lint rules. A test checks every entry is unique, documented and tested."""

from __future__ import annotations

from polymigrate.lint.rule import Rule
from polymigrate.lint.rules import (elasticsearch, governance, meta, mongodb, pg_breaking, pg_constraints, pg_index,
                                    pg_rewrite, pg_robust, pg_timeouts, pg_types, redis_lua, security)

RULES: tuple[Rule, ...] = (
    *pg_index.RULES, *pg_timeouts.RULES, *pg_rewrite.RULES, *pg_constraints.RULES, *pg_breaking.RULES,
    *pg_types.RULES, *pg_robust.RULES, *security.RULES, *mongodb.RULES, *redis_lua.RULES,
    *elasticsearch.RULES, *governance.RULES, *meta.RULES,
)
BY_NAME: dict[str, Rule] = {r.name: r for r in RULES}
ALIASES: dict[str, str] = {a: r.name for r in RULES for a in r.aliases}


def canonical(name: str) -> str | None:
    """The rule a name (or alias) refers to, None if unknown."""
    return name if name in BY_NAME else ALIASES.get(name)


def get(name: str) -> Rule:
    return BY_NAME[canonical(name) or name]
