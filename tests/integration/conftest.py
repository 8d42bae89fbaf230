"""Fixtures of the integration tests (real servers only; see tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def audit_url(make_pg_database, monkeypatch) -> str:
    """A fresh audit store database, configured as the ``polymigrate_audit`` connection of this process."""
    from polymigrate.connections import AUDIT_CONN_ID, env_var

    url = make_pg_database("pm_audit")
    monkeypatch.setenv(env_var(AUDIT_CONN_ID), url)
    return url
