"""Line numbers for items of a parsed JSON migration (json.loads forgets them)."""

from __future__ import annotations


def item_lines(text: str, keys: list[str]) -> list[int]:
    """Line of each successive ``"key"`` occurrence, in order (one per item of a list)."""
    lines, pos = [], 0
    for key in keys:
        found = text.find(f'"{key}"', pos)
        if found < 0:
            lines.append(lines[-1] if lines else 1)
            continue
        lines.append(text.count("\n", 0, found) + 1)
        pos = found + len(key) + 2
    return lines


def first_key(item) -> str:
    return next(iter(item), "") if isinstance(item, dict) else ""
