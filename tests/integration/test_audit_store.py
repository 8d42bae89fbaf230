"""The audit store on the real PostgreSQL server: append-only, hash-chained, tamper-evident."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg import sql

from polymigrate.audit import AUDIT_CONN_ID, PostgresAuditStore, open_sink
from polymigrate.audit.store import WRITER_ROLE
from polymigrate.errors import PermanentError
from polymigrate.events import AuditEvent, NullSink

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=timezone.utc)


def ev(kind: str, minutes: int = 0, **kw) -> AuditEvent:
    kw.setdefault("domain", "social-commerce")
    kw.setdefault("environment", "staging")
    kw.setdefault("actor", "alice")
    return AuditEvent(kind=kind, at=T0 + timedelta(minutes=minutes), **kw)


@pytest.fixture
def store(pg_url):
    s = PostgresAuditStore(pg_url)
    s.ensure_schema()
    yield s
    s.close()


def seed(store: PostgresAuditStore, n: int = 5) -> None:
    for i in range(n):
        store.emit(ev("migration_succeeded", i, region="western_europe" if i % 2 else "north_africa",
                      technology="postgresql", version=f"1.{i}", duration_ms=100 * i, details={"note": f"é{i}"}))


def superuser_tamper(url: str, statement: str, params=()) -> None:
    """What an attacker with superuser rights does: switch the trigger off, edit, switch it back on."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("ALTER TABLE polymigrate_audit.events DISABLE TRIGGER USER")
        conn.execute(statement, params)
        conn.execute("ALTER TABLE polymigrate_audit.events ENABLE TRIGGER USER")


def test_intact_chain_verifies_and_round_trips_events(store):
    seed(store)
    result = store.verify()
    assert result.ok, str(result)
    assert (result.checked, result.last_id) == (5, 5)
    records = store.query()
    assert [r.id for r in records] == [1, 2, 3, 4, 5]
    assert records[3].event.details == {"note": "é3"} and records[3].event.at == T0 + timedelta(minutes=3)


def test_query_filters_by_time_scope_and_kind(store):
    seed(store)
    store.emit(ev("approved", 10, actor="bob"))
    store.emit(ev("planned", 11, environment="production"))
    assert [r.id for r in store.query(T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))] == [2, 3]
    assert [r.event.version for r in store.query(region="western_europe")] == ["1.1", "1.3"]
    assert [r.event.actor for r in store.query(kind="approved")] == ["bob"]
    assert [r.id for r in store.query(environment="production")] == [7]
    assert [r.id for r in store.query(kind=["approved", "planned"], limit=1, newest_first=True)] == [7]


def test_edited_body_is_detected_naming_the_row(store, pg_url):
    seed(store)
    superuser_tamper(pg_url, "UPDATE polymigrate_audit.events SET body = replace(body, '\"1.2\"', '\"9.9\"'),"
                             " version = '9.9' WHERE id = 3")
    result = store.verify()
    assert not result.ok
    assert result.broken_id == 3 and "edited after it was written" in result.problem
    assert result.checked == 2


def test_edited_column_alone_is_detected(store, pg_url):
    seed(store)
    superuser_tamper(pg_url, "UPDATE polymigrate_audit.events SET actor = 'mallory' WHERE id = 4")
    result = store.verify()
    assert result.broken_id == 4
    assert "column actor is 'mallory' but the hashed event says 'alice'" in result.problem


def test_rewritten_row_with_recomputed_hash_breaks_the_next_link(store, pg_url):
    seed(store)
    # A careful attacker recomputes the edited row's hash; the next row still points at the old one.
    superuser_tamper(pg_url, "UPDATE polymigrate_audit.events SET hash = repeat('a', 64) WHERE id = 2")
    result = store.verify()
    assert result.broken_id in (2, 3)
    superuser_tamper(pg_url, "UPDATE polymigrate_audit.events SET hash = encode(sha256(convert_to(prev_hash || body,"
                             " 'UTF8')), 'hex') WHERE id = 2")
    assert store.verify().ok
    superuser_tamper(pg_url, "UPDATE polymigrate_audit.events SET body = replace(body, 'alice', 'eve'),"
                             " actor = 'eve' WHERE id = 2")
    superuser_tamper(pg_url, "UPDATE polymigrate_audit.events SET hash = encode(sha256(convert_to(prev_hash || body,"
                             " 'UTF8')), 'hex') WHERE id = 2")
    result = store.verify()
    assert result.broken_id == 3 and "row 2 was rewritten" in result.problem


def test_deleted_rows_are_detected_in_the_middle_and_at_the_end(store, pg_url):
    seed(store)
    superuser_tamper(pg_url, "DELETE FROM polymigrate_audit.events WHERE id = 5")
    result = store.verify()
    assert not result.ok and result.broken_id == 5 and "rows at the end were deleted" in result.problem
    superuser_tamper(pg_url, "DELETE FROM polymigrate_audit.events WHERE id = 2")
    result = store.verify()
    assert result.broken_id == 3 and "row 2 missing" in result.problem


def test_owner_cannot_update_delete_or_truncate_through_the_trigger(store, pg_url):
    seed(store, 2)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in ("UPDATE polymigrate_audit.events SET actor = 'x'",
                          "DELETE FROM polymigrate_audit.events",
                          "TRUNCATE polymigrate_audit.events",
                          "DELETE FROM polymigrate_audit.chain_head"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
    assert store.verify().ok and store.verify().checked == 2


@pytest.fixture
def writer_url(store, pg_url):
    """A login role that is only a member of the writer role, as Airflow's audit user would be."""
    login = f"pm_audit_w_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(login)))
    result = store.ensure_schema(grant_to=login)
    assert result.writer_role == WRITER_ROLE
    base, _, db = pg_url.rpartition("/")
    yield base.replace("postgres@", f"{login}@") + "/" + db
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(login)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(login)))


def test_writer_role_appends_but_cannot_update_or_delete(writer_url, store):
    with PostgresAuditStore(writer_url) as writer:
        writer.emit(ev("validated"))
        writer.emit(ev("approved", 1, actor="bob"))
        assert writer.verify().ok
    with psycopg.connect(writer_url, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0].startswith("pm_audit_w_")
        for statement in ("UPDATE polymigrate_audit.events SET actor = 'x' WHERE id = 1",
                          "DELETE FROM polymigrate_audit.events WHERE id = 1",
                          "TRUNCATE polymigrate_audit.events",
                          "ALTER TABLE polymigrate_audit.events DISABLE TRIGGER USER"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    assert [r.event.actor for r in store.query()] == ["alice", "bob"]


def test_concurrent_writers_keep_one_unforked_chain(store, pg_url):
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            with PostgresAuditStore(pg_url) as s:
                for i in range(25):
                    s.emit(ev("migration_started", i, region=f"r{n}", version=str(i)))
        except BaseException as exc:  # surfaced below; a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    result = store.verify()
    assert result.ok and result.checked == 100, str(result)


def test_emit_adds_the_run_link_from_the_api_base_url(store, monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080/")
    store.emit(ev("planned", dag_id="polymigrate__social-commerce__staging", run_id="manual__2026-11-02T01:00:00+00:00"))
    store.emit(ev("planned", dag_id="d", run_id="r", details={"run_url": "http://kept"}))
    urls = [r.event.details["run_url"] for r in store.query()]
    assert urls == ["http://airflow.example:8080/dags/polymigrate__social-commerce__staging/runs/"
                    "manual__2026-11-02T01%3A00%3A00%2B00%3A00", "http://kept"]


def test_open_sink_requires_a_store_in_guarded_environments():
    assert isinstance(open_sink(None, required=False), NullSink)
    with pytest.raises(PermanentError) as info:
        open_sink(None, required=True)
    assert AUDIT_CONN_ID in str(info.value) and "AIRFLOW_CONN_POLYMIGRATE_AUDIT" in str(info.value)


def test_open_sink_refuses_an_unreachable_store_before_any_work():
    url = "postgresql://postgres@127.0.0.1:1/nowhere"  # port 1: connection refused at once
    for required in (True, False):
        with pytest.raises(PermanentError) as info:
            open_sink(url, required=required)
        assert f"connection '{AUDIT_CONN_ID}'" in str(info.value) and "nothing was run" in str(info.value)


def test_open_sink_initialises_a_fresh_database(pg_url):
    sink = open_sink(pg_url, required=True)
    try:
        sink.emit(ev("triggered"))
        assert sink.verify().ok and [r.event.kind for r in sink.query()] == ["triggered"]
    finally:
        sink.close()


def test_values_the_json_stringifies_are_stored_as_hashed(store):
    from polymigrate.versions import Version

    store.emit(ev("migration_succeeded", version=Version("1.10"), region="western_europe"))
    assert store.verify().ok
    assert [r.event.version for r in store.query(region="western_europe")] == ["1.10"]


class _DropsAfterFirstCommit:
    """The real store, unreachable exactly between a migration's commit and its 'succeeded' event."""

    def __init__(self, store):
        self.store, self.dropped = store, False

    def emit(self, event):
        if event.kind == "migration_succeeded" and not self.dropped:
            self.dropped = True
            raise PermanentError("audit store unreachable (connection reset)")
        self.store.emit(event)


def test_a_retry_records_the_success_event_the_store_missed(store, make_pg_database, tmp_path):
    from polymigrate.adapters.postgresql.adapter import PostgresAdapter
    from polymigrate.catalog import discover
    from polymigrate.executor import migrate
    from polymigrate.ledger import RunContext

    folder = tmp_path / "postgresql"
    folder.mkdir()
    (folder / "V1__orders.sql").write_text("CREATE TABLE orders (id bigint);\n")
    (folder / "V2__total.sql").write_text("ALTER TABLE orders ADD COLUMN total numeric;\n")
    migrations = discover("shop", "postgresql", folder).applicable("postgresql")
    target = PostgresAdapter(make_pg_database(), domain="shop")
    ctx = RunContext(domain="shop", environment="staging", region="western_europe", actor="olga@airflow",
                     run_id="manual__1", task_id="western_europe.postgresql", try_number=1)
    try:
        with pytest.raises(PermanentError, match="audit store unreachable"):
            migrate(target, migrations, ctx, sink=_DropsAfterFirstCommit(store))
        # V1 committed with its ledger row, but the trail has only its 'started'
        assert [e.version for e in target.read_ledger()] == ["1"]
        assert store.succeeded_scripts(run_id="manual__1", domain="shop", region="western_europe",
                                       technology="postgresql") == set()

        retry = dataclasses.replace(ctx, try_number=2)
        result = migrate(target, migrations, retry, sink=store)
        assert [a["script"] for a in result.applied] == ["V2__total.sql"]  # V1 is not applied twice
    finally:
        target.close()
    succeeded = store.query(kind="migration_succeeded", run_id="manual__1")
    assert [(r.event.script, r.event.try_number, r.event.details.get("recovered", False)) for r in succeeded] == [
        ("V1__orders.sql", 2, True), ("V2__total.sql", 2, False)]
    assert store.verify().ok
