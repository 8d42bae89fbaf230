"""The cursor-protocol Lua templates shipped in ``polymigrate/templates/redis/``.

``cursor`` is what ``polymigrate new <domain> redis …`` writes; the others are the patterns of the
original plan, rewritten to run in batches: ``rename-keys``, ``strings-to-hash``, ``ttl-policy``.
"""

from __future__ import annotations

from importlib.resources import files

NAMES = ("cursor", "rename-keys", "strings-to-hash", "ttl-policy")


def template(name: str = "cursor") -> str:
    """The text of one template; KeyError naming the known ones otherwise."""
    if name not in NAMES:
        raise KeyError(f"no Redis template {name!r}; known: {', '.join(NAMES)}")
    return (files("polymigrate") / "templates" / "redis" / f"{name}.lua").read_text(encoding="utf-8")


def new_file_template() -> str:
    """The ``cursor`` template as a ``str.format`` pattern taking ``description`` (Lua braces escaped)."""
    return (template("cursor").replace("{", "{{").replace("}", "}}")
            .replace("__DESCRIPTION__", "{description}"))
