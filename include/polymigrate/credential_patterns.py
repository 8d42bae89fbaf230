"""What a credential written into a file looks like: one definition for the spec loader (which rejects
a spec holding one) and the lint rule ``secret-in-migration`` (which flags a migration file holding
one). A ``${placeholder}`` is never a credential: it is how values from the secrets backend get in.
"""

from __future__ import annotations

import re

# scheme://user:password@ (the user may be empty, as in redis://:password@host)
URL_WITH_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]*:(?!\$\{)[^\s@'\"/]+@", re.I)

# Values that are credentials whatever surrounds them: what each is, and its pattern.
TOKENS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a JSON web token", re.compile(r"\beyJ[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}")),
    ("a Slack token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)


def token_in(text: str) -> str | None:
    """What kind of token ``text`` holds (e.g. "a GitHub token"), None when it holds none."""
    return next((what for what, pattern in TOKENS if pattern.search(text)), None)
