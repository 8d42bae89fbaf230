"""CLI verbs: lint (filled by its issue)."""
