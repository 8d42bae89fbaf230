"""What the e2e tests share (issue 25, item 3): helpers every test module used to define for itself.

Fixtures stay in conftest.py; plain helpers live here, imported by name, so a test module never
imports another test module for them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path


def write(path: Path, text: str) -> None:
    """A spec or migration file, its folders made, the test's indented text dedented."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
