"""Lint rules, one module per small family; ``polymigrate.lint.registry`` lists them all."""
