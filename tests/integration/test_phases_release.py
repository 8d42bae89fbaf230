"""A phased release through the command line on real PostgreSQL and Redis: expand everywhere, then
migrate (a PostgreSQL backfill, a Redis script), then contract; a failure in migrate leaves contract
not run and the old column intact; the contract soak refuses, then lets the contract run alone."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from typer.testing import CliRunner

from polymigrate.cli import app
from polymigrate.connections import env_var

pytestmark = pytest.mark.integration


def write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


@pytest.fixture
def release(tmp_path, make_pg_database, monkeypatch):
    root = tmp_path / "specs"
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    domain = f"shop{uuid.uuid4().hex[:6]}"  # the Redis ledger is per domain: one of its own per test
    write(root / "environments", {"testing.yaml": "regions:\n  r1: {}\npolicy:\n  approvals: {required: 0}\n"})
    write(root / domain, {"domain.yaml": "technologies:\n  postgresql: {schema: shop, phases: [expand, migrate, contract]}\n"
                                         f"  redis: {{key_prefix: '{prefix}', phases: [expand, migrate]}}\n"
                                         "order: [postgresql, redis]\n"})
    write(root / domain / "postgresql", {
        "V1__users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, first_name text, last_name text);\n"
                         "INSERT INTO users SELECT g, 'f' || g, 'l' || g FROM generate_series(1, 500) g;\n",
        "V2__add_full_name.sql": "-- polymigrate: phase=expand\nALTER TABLE users ADD COLUMN full_name text;\n",
        "V3__backfill_full_name.sql": "-- polymigrate: phase=migrate, backfill=true, batch_size=100\n"
                                      "UPDATE users SET full_name = first_name || ' ' || last_name WHERE full_name IS NULL;\n",
        "V4__drop_first_name.sql": "-- polymigrate: phase=contract\n"
                                   "-- polymigrate:lint-ignore ban-drop-column reason: the release contract step, after every reader moved to full_name\n"
                                   "ALTER TABLE users DROP COLUMN first_name;\n",
    })
    write(root / domain / "redis", {
        "1-schema-key.lua": "-- polymigrate: phase=expand\nredis.call('RPUSH', ARGV[3] .. 'order', 'expand-redis')\nreturn 0\n",
        "2-copy-names.lua": "-- polymigrate: phase=migrate\nredis.call('RPUSH', ARGV[3] .. 'order', 'migrate-redis')\nreturn 0\n",
    })
    pg = make_pg_database()
    r = os.environ.get("POLYMIGRATE_TEST_REDIS", "redis://127.0.0.1:63790")
    monkeypatch.setenv(env_var("polymigrate_postgresql_testing_r1"), pg)
    monkeypatch.setenv(env_var("polymigrate_redis_testing_r1"), r)
    client = redis.Redis.from_url(r)
    yield root, pg, client, prefix, domain
    for key in [*client.scan_iter(f"{prefix}*"), *client.scan_iter(f"*{domain}*")]:
        client.delete(key)


def pg(url: str, q: str):
    with psycopg.connect(url) as c:
        return c.execute(q).fetchall()


def applied_order(url: str) -> list[str]:
    return [r[0] for r in pg(url, "SELECT script FROM polymigrate.schema_history WHERE status = 'success' "
                                  "ORDER BY installed_rank")]


def test_phases_run_phase_major_and_a_failed_migrate_keeps_the_old_column(release):
    root, url, client, prefix, domain = release
    # first, a migrate step that fails: the backfill names a column that does not exist
    bad = root / domain / "postgresql/V3__backfill_full_name.sql"
    good = bad.read_text()
    bad.write_text(good.replace("last_name WHERE", "nickname WHERE"))
    client.delete(f"{prefix}order")
    out = CliRunner().invoke(app, ["migrate", "-e", "testing", "-d", domain, "-s", str(root)])
    assert out.exit_code == 1
    assert "V3__backfill_full_name.sql" in out.stderr and "nickname" in out.stderr
    # phase-major: expand on both engines, then migrate stopped at PostgreSQL's backfill before Redis's migrate
    # (one block per technology would have stopped in PostgreSQL before Redis ran anything)
    assert [x.decode() for x in client.lrange(f"{prefix}order", 0, -1)] == ["expand-redis"]
    assert applied_order(url) == ["V1__users.sql", "V2__add_full_name.sql"]
    assert pg(url, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'shop' "
                   "AND table_name = 'users' AND column_name = 'first_name'") == [(1,)]

    # the file is fixed (a failed backfill committed nothing, so repair realigns it) and the release completes
    bad.write_text(good)
    fixed = CliRunner().invoke(app, ["repair", "-e", "testing", "-d", domain, "-s", str(root), "-t", "postgresql"])
    assert fixed.exit_code == 0, fixed.output + fixed.stderr
    out = CliRunner().invoke(app, ["migrate", "-e", "testing", "-d", domain, "-s", str(root)])
    assert out.exit_code == 0, out.output + out.stderr
    assert [x.decode() for x in client.lrange(f"{prefix}order", 0, -1)] == ["expand-redis", "migrate-redis"]
    assert applied_order(url)[-2:] == ["V3__backfill_full_name.sql", "V4__drop_first_name.sql"]
    assert pg(url, "SELECT full_name FROM shop.users WHERE id = 7") == [("f7 l7",)]
    assert pg(url, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'shop' "
                   "AND column_name = 'first_name'") == [(0,)]
    # undo of the contract is refused, naming it
    undo = CliRunner().invoke(app, ["undo", "--to", "3", "-e", "testing", "-d", domain, "-s", str(root), "-t", "postgresql"])
    assert undo.exit_code == 1 and "V4__drop_first_name.sql: version 4 is a contract-phase migration" in undo.stderr


def test_the_contract_soak_stops_the_command_line_after_migrate(release):
    root, url, client, prefix, domain = release
    env = root / "environments/testing.yaml"
    env.write_text(env.read_text() + "  contract_soak_minutes: 30\n")
    out = CliRunner().invoke(app, ["migrate", "-e", "testing", "-d", domain, "-s", str(root)])
    assert out.exit_code == 1
    assert "expand and migrate are applied and verified; the contract phase waits 30 min of soak" in out.stderr
    assert applied_order(url)[-1] == "V3__backfill_full_name.sql"
    assert pg(url, "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'shop' "
                   "AND column_name = 'first_name'") == [(1,)]
