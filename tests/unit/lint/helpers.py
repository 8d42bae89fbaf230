"""Build real Migration objects from text, the way the catalog does, for the lint tests."""

from __future__ import annotations

from pathlib import Path

from polymigrate.catalog import load_file

NAMES = {"postgresql": "V1__change.sql", "mongodb": "1-change.json", "redis": "1-change.lua",
         "elasticsearch": "1-change.json"}


def migration(tmp_path: Path, technology: str, text: str, name: str | None = None):
    root = tmp_path / technology
    root.mkdir(parents=True, exist_ok=True)
    path = root / (name or NAMES[technology])
    path.write_text(text, encoding="utf-8")
    mig, problems, _ = load_file("shop", technology, root, path)
    assert mig is not None and not problems, problems
    return mig
