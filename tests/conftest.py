"""Shared fixtures: real PostgreSQL and Redis servers (never mocks).

Defaults match the development machines (127.0.0.1:5432 trust auth, 127.0.0.1:6379); override
with POLYMIGRATE_TEST_PG / POLYMIGRATE_TEST_REDIS.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "migration_specs"
PG_ADMIN_URL = os.environ.get("POLYMIGRATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("POLYMIGRATE_TEST_REDIS", "redis://127.0.0.1:6379")
REDIS_DB = int(os.environ.get("POLYMIGRATE_TEST_REDIS_DB", "15"))  # the DB the tests may flush
sys.path.insert(0, str(ROOT))  # tests.conformance


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture
def make_pg_database():
    """Factory of fresh, uniquely named databases, dropped after the test."""
    import psycopg
    from psycopg import sql

    created: list[str] = []

    def make(prefix: str = "pm_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return _pg_url(name)

    yield make
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_url(make_pg_database) -> str:
    """A fresh database URL on the real server."""
    return make_pg_database()


@pytest.fixture
def redis_url() -> str:
    """A flushed Redis DB (POLYMIGRATE_TEST_REDIS_DB, default 15) on the real server."""
    import redis

    url = f"{REDIS_URL}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()
