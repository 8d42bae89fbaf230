"""CLI verbs: audit (filled by its issue)."""
