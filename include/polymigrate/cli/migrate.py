"""CLI verbs: migrate (filled by its issue)."""
