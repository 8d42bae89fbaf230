"""PostgresAdapter on the real server: apply modes, errors, resume, undo, baseline, repair, snapshot."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg
import pytest

from polymigrate.adapters.postgresql.adapter import PostgresAdapter
from polymigrate.catalog import Kind, discover
from polymigrate.errors import LockNotAcquired, PermanentError, TransientError, ValidationFailed
from polymigrate.executor import migrate, undo_to
from polymigrate.ledger import RunContext, Status
from polymigrate.spec import TechnologyConfig
from tests.recording import RecordingSink

pytestmark = pytest.mark.integration


class Files:
    """A migration folder in tmp_path that tests grow file by file."""

    def __init__(self, root: Path):
        self.root = root / "postgresql"
        self.root.mkdir(parents=True)

    def add(self, name: str, text: str) -> "Files":
        (self.root / name).write_text(text, encoding="utf-8")
        return self

    def all(self):
        cat = discover("shop", "postgresql", self.root)
        assert not cat.problems, cat.problems
        return cat.migrations["postgresql"]

    def applicable(self):
        return [m for m in self.all() if m.kind is not Kind.UNDO]


@pytest.fixture
def files(tmp_path) -> Files:
    return Files(tmp_path)


@pytest.fixture
def adapter(pg_url):
    a = PostgresAdapter.from_url(pg_url, domain="shop")
    yield a
    a.close()


def ctx(**kw) -> RunContext:
    return RunContext(**{"domain": "shop", "environment": "testing", "region": "r1", "actor": "tester@host",
                         "run_id": "run-1", "lock_wait_seconds": 5, **kw})


def q(url: str, sql: str, *params):
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(sql, params or None)
        return cur.fetchall() if cur.description else None


def test_a_failing_transactional_file_leaves_nothing_behind_and_names_the_line(pg_url, adapter, files):
    files.add("V1__orders.sql", "CREATE TABLE orders (id int);\n\nINSERT INTO orders VALUES (1);\n"
                                "INSERT INTO orders\n  VALUES ('not a number');\n")
    with pytest.raises(PermanentError) as info:
        migrate(adapter, files.applicable(), ctx())
    err = info.value
    assert not isinstance(err, TransientError)
    assert str(err.file).endswith("V1__orders.sql") and err.line == 5  # the line of the bad value
    assert "not a number" in err.statement and "22P02" in str(err)
    assert q(pg_url, "SELECT to_regclass('orders')") == [(None,)]  # rolled back with its ledger row
    assert adapter.read_ledger() == []


def test_a_lock_timeout_is_transient_and_records_nothing(pg_url, adapter, files):
    q(pg_url, "CREATE TABLE busy (id int)")
    files.add("V1__alter.sql", "-- polymigrate: lock_timeout=200ms\nALTER TABLE busy ADD COLUMN x int;\n")
    with psycopg.connect(pg_url) as holder:
        holder.execute("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(TransientError) as info:
            migrate(adapter, files.applicable(), ctx(lock_timeout="30s"))  # the file's directive wins
    assert "55P03" in str(info.value) and "V1__alter.sql:2" in str(info.value)
    assert adapter.read_ledger() == []
    migrate(adapter, files.applicable(), ctx())  # the retry succeeds once the holder is gone
    assert [e.status for e in adapter.read_ledger()] == [Status.SUCCESS]


def test_statement_timeout_directive_applies_and_is_permanent(adapter, files):
    files.add("V1__slow.sql", "-- polymigrate: statement_timeout=100ms\nSELECT pg_sleep(2);\n")
    with pytest.raises(PermanentError) as info:
        migrate(adapter, files.applicable(), ctx())
    assert not isinstance(info.value, TransientError)
    assert "statement_timeout" in str(info.value)


def test_timeouts_and_search_path_do_not_leak_between_files(pg_url, files):
    a = PostgresAdapter.from_url(pg_url, domain="shop", settings=TechnologyConfig(schema="sales"))
    try:
        files.add("V1__t.sql", "-- polymigrate: statement_timeout=1s\nCREATE TABLE t (id int);\n")
        files.add("V2__slow.sql", "SELECT pg_sleep(1.5);\n")  # would fail if V1's timeout stayed set
        migrate(a, files.applicable(), ctx())
        assert a.conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
    finally:
        a.close()
    assert q(pg_url, "SELECT to_regclass('sales.t') IS NOT NULL") == [(True,)]  # schema created, used as search_path


def test_a_commit_in_a_file_whose_header_promises_one_transaction_is_refused_before_anything_runs(
        pg_url, adapter, files):
    files.add("V1__commit.sql", "-- polymigrate: transactional=true\nCREATE TABLE a (id int);\nCOMMIT;\n"
                                "CREATE TABLE b (id int);\n")
    with pytest.raises(PermanentError) as info:
        migrate(adapter, files.applicable(), ctx())
    assert "V1__commit.sql:3" in str(info.value) and "COMMIT" in str(info.value)
    assert q(pg_url, "SELECT to_regclass('a')") == [(None,)]


def test_non_transactional_file_resumes_after_the_last_finished_statement(pg_url, adapter, files):
    q(pg_url, "CREATE TABLE counter (n int); CREATE TABLE dup (k int); INSERT INTO dup VALUES (1), (1)")
    files.add("V1__idx.sql", "INSERT INTO counter VALUES (1);\n"
                             "CREATE UNIQUE INDEX CONCURRENTLY dup_k ON dup (k);\n"
                             "INSERT INTO counter VALUES (2);\n")
    with pytest.raises(PermanentError) as info:
        migrate(adapter, files.applicable(), ctx())
    assert "statement 2 of 3" in str(info.value) and "V1__idx.sql:2" in str(info.value)
    [row] = adapter.read_ledger()
    assert row.status is Status.FAILED and not row.success and row.progress["statements_done"] == 1
    # the failed build left an INVALID index behind
    assert q(pg_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'dup_k'::regclass") == [(False,)]

    q(pg_url, "DELETE FROM dup WHERE ctid IN (SELECT max(ctid) FROM dup)")
    result = migrate(adapter, files.applicable(), ctx(run_id="run-2"))
    assert result.applied[0]["action"] == "resume"
    assert q(pg_url, "SELECT n FROM counter ORDER BY n") == [(1,), (2,)]  # statement 1 did not run twice
    assert q(pg_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'dup_k'::regclass") == [(True,)]
    [row] = adapter.read_ledger()
    assert row.status is Status.SUCCESS and row.success and row.run_id == "run-2"
    assert row.progress["statements_done"] == 3


def test_transactional_false_runs_each_statement_on_its_own(pg_url, adapter, files):
    files.add("V1__each.sql", "-- polymigrate: transactional=false\nCREATE TABLE a (id int);\nCREATE TABLE a (id int);\n")
    with pytest.raises(PermanentError):
        migrate(adapter, files.applicable(), ctx())
    assert q(pg_url, "SELECT to_regclass('a') IS NOT NULL") == [(True,)]  # the first statement committed
    assert adapter.read_ledger()[0].progress["statements_done"] == 1


def test_a_statement_that_cannot_run_in_a_transaction_but_is_marked_so_gets_a_fix_hint(adapter, files):
    files.add("V1__vac.sql", "-- polymigrate: transactional=true\nCREATE TABLE a (id int);\nVACUUM a;\n")
    with pytest.raises(PermanentError) as info:
        migrate(adapter, files.applicable(), ctx())
    assert "transactional=false" in str(info.value)


def test_repeatables_rerun_when_their_checksum_changes_after_versioned(pg_url, adapter, files):
    files.add("R__view.sql", "CREATE OR REPLACE VIEW v AS SELECT 1 AS one;\n")
    files.add("V1__t.sql", "CREATE TABLE t (id int);\n")
    first = migrate(adapter, files.applicable(), ctx())
    assert [a["script"] for a in first.applied] == ["V1__t.sql", "R__view.sql"]
    assert migrate(adapter, files.applicable(), ctx()).applied == []
    files.add("R__view.sql", "CREATE OR REPLACE VIEW v AS SELECT 1 AS one, 2 AS two;\n")
    again = migrate(adapter, files.applicable(), ctx())
    assert [(a["script"], a["action"]) for a in again.applied] == [("R__view.sql", "apply")]
    assert q(pg_url, "SELECT two FROM v") == [(2,)]


def test_out_of_order_version_stops_the_run_unless_allowed(adapter, files):
    files.add("V1__a.sql", "CREATE TABLE a (id int);\n").add("V3__c.sql", "CREATE TABLE c (id int);\n")
    migrate(adapter, files.applicable(), ctx())
    files.add("V2__b.sql", "CREATE TABLE b (id int);\n")
    with pytest.raises(ValidationFailed) as info:
        migrate(adapter, files.applicable(), ctx())
    assert "V2__b.sql" in str(info.value) and "--out-of-order" in str(info.value)
    done = migrate(adapter, files.applicable(), ctx(), out_of_order=True)
    assert [a["script"] for a in done.applied] == ["V2__b.sql"]


def test_undo_to_reverts_newest_first_and_the_versions_become_pending(pg_url, adapter, files):
    files.add("V1__a.sql", "CREATE TABLE a (id int);\n").add("V2__b.sql", "CREATE TABLE b (id int);\n")
    files.add("V3__c.sql", "CREATE INDEX CONCURRENTLY a_id ON a (id);\n")
    files.add("U2__b.sql", "DROP TABLE b;\n").add("U3__c.sql", "DROP INDEX CONCURRENTLY a_id;\n")
    migrate(adapter, files.applicable(), ctx())
    result = undo_to(adapter, files.all(), ctx(), "1")
    assert [a["version"] for a in result.applied] == ["3", "2"] and result.current_version == "1"
    assert q(pg_url, "SELECT to_regclass('b'), to_regclass('a_id')") == [(None, None)]
    again = migrate(adapter, files.applicable(), ctx())
    assert [a["version"] for a in again.applied] == ["2", "3"]


def test_undo_to_checks_every_undo_file_before_changing_anything(pg_url, adapter, files):
    files.add("V1__a.sql", "CREATE TABLE a (id int);\n").add("V2__b.sql", "CREATE TABLE b (id int);\n")
    files.add("U2__b.sql", "DROP TABLE b;\n")
    migrate(adapter, files.applicable(), ctx())
    with pytest.raises(PermanentError) as info:
        undo_to(adapter, files.all(), ctx(), "0")
    assert "V1__a.sql" in str(info.value) and "no undo file" in str(info.value)
    assert q(pg_url, "SELECT to_regclass('b') IS NOT NULL") == [(True,)]


def test_baseline_skips_older_versions_and_refuses_a_used_ledger(pg_url, adapter, files):
    files.add("V1__a.sql", "CREATE TABLE a (id int);\n").add("V2__b.sql", "CREATE TABLE b (id int);\n")
    adapter.baseline("1", "existing schema", ctx())
    adapter.baseline("1", "existing schema", ctx())  # same baseline again: no-op
    result = migrate(adapter, files.applicable(), ctx())
    assert [a["script"] for a in result.applied] == ["V2__b.sql"]
    assert q(pg_url, "SELECT to_regclass('a')") == [(None,)]
    with pytest.raises(PermanentError):
        adapter.baseline("5", "again", ctx())


def test_repair_realigns_checksums_keeps_half_done_progress_and_removes_missing_rows(adapter, files):
    files.add("V1__a.sql", "CREATE TABLE a (id int);\n")
    migrate(adapter, files.applicable(), ctx())
    files.add("V1__a.sql", "CREATE TABLE a (id int);  -- reformatted\n")
    files.add("V2__b.sql", "-- polymigrate: transactional=false\nCREATE TABLE b (id int);\nSELECT 1/0;\n")
    with pytest.raises(ValidationFailed):
        migrate(adapter, files.applicable(), ctx())
    report = adapter.repair(files.all(), ctx())
    assert report.realigned == ["V1__a.sql"] and report.removed == []
    with pytest.raises(PermanentError):
        migrate(adapter, files.applicable(), ctx())  # V2 fails half way: CREATE TABLE b committed
    files.add("V2__b.sql", "-- polymigrate: transactional=false\nCREATE TABLE b (id int);\nSELECT 1/1;\n")
    with pytest.raises(ValidationFailed, match="stopped half way .1 statement.s. committed"):
        migrate(adapter, files.applicable(), ctx())
    report = adapter.repair(files.all(), ctx())
    assert report.realigned == ["V2__b.sql"] and report.removed == []
    # the fixed file resumes after the committed CREATE TABLE instead of running it twice
    result = migrate(adapter, files.applicable(), ctx())
    assert [(a["script"], a["action"]) for a in result.applied] == [("V2__b.sql", "resume")]
    assert [e.status for e in adapter.read_ledger()] == [Status.SUCCESS, Status.SUCCESS]
    files.root.joinpath("V1__a.sql").unlink()
    assert adapter.repair(files.all(), ctx()).removed == ["V1__a.sql"]  # a file that is gone: marked deleted
    # Flyway's shape: the applied row is kept (now deleted) and a DELETE row follows
    assert [(e.type, e.status, e.success) for e in adapter.read_ledger()] == [
        ("SQL", Status.DELETED, True), ("SQL", Status.SUCCESS, True), ("DELETE", Status.DELETED, True)]


def test_two_domains_share_a_database_with_separate_rows_and_locks(pg_url, files):
    a = PostgresAdapter.from_url(pg_url, domain="shop")
    b = PostgresAdapter.from_url(pg_url, domain="courier")
    try:
        files.add("V1__a.sql", "CREATE TABLE shop_a (id int);\n")
        migrate(a, files.applicable(), ctx())
        assert b.read_ledger() == [] and len(a.read_ledger()) == 1
        with a.lock("shop run", 1), b.lock("courier run", 1):
            pass  # different domains do not block each other
    finally:
        a.close()
        b.close()


def test_custom_ledger_table_and_dict_client(pg_url, files):
    info = psycopg.conninfo.conninfo_to_dict(pg_url)
    a = PostgresAdapter({**info, "dbname": info["dbname"]}, domain="shop",
                        settings=TechnologyConfig(ledger="ops.history"))
    try:
        files.add("V1__a.sql", "CREATE TABLE a (id int);\n")
        migrate(a, files.applicable(), ctx())
        assert "@" in a.target and "password" not in a.target
    finally:
        a.close()
    assert q(pg_url, "SELECT version, script FROM ops.history") == [("1", "V1__a.sql")]


def test_lock_holder_is_visible_in_pg_stat_activity_and_in_the_error(pg_url, make_pg_database):
    a = PostgresAdapter.from_url(pg_url, domain="shop")
    b = PostgresAdapter.from_url(pg_url, domain="shop")
    long_owner = "airflow@worker-7 dag=pm_shop_production run=manual__2026-11-25T21:10:56+00:00 task=execute.weu try=2"
    try:
        with a.lock(long_owner, 1):
            names = [r[0] for r in q(pg_url, "SELECT application_name FROM pg_stat_activity")]
            assert any(n.startswith("polymigrate lock: airflow@worker-7") for n in names)
            with pytest.raises(LockNotAcquired) as info:
                with b.lock("bob", 0.3):
                    pass
            assert long_owner in str(info.value) and info.value.holder.startswith(long_owner)
            assert isinstance(info.value, TransientError)
        assert b.lock_holder() == "nobody"
    finally:
        a.close()
        b.close()


def test_a_concurrent_index_build_does_not_deadlock_with_the_lock(pg_url, files):
    """Flyway's bug: its lock transaction blocks CREATE INDEX CONCURRENTLY forever. Ours is a session lock."""
    q(pg_url, "CREATE TABLE big AS SELECT g AS id FROM generate_series(1, 1000) g")
    files.add("V1__idx.sql", "-- polymigrate: lock_timeout=5s\nCREATE INDEX CONCURRENTLY big_id ON big (id);\n")
    a = PostgresAdapter.from_url(pg_url, domain="shop")
    done = []
    try:
        t = threading.Thread(target=lambda: done.append(migrate(a, files.applicable(), ctx())))
        t.start()
        t.join(30)
        assert done and done[0].applied[0]["script"] == "V1__idx.sql"
    finally:
        a.close()


def test_unreachable_server_is_transient(files):
    a = PostgresAdapter.from_url("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2", domain="shop")
    with pytest.raises(TransientError) as info:
        a.read_ledger()
    assert "127.0.0.1:1" in str(info.value)


def test_snapshot_lists_schema_objects_but_not_the_ledger(pg_url, files):
    a = PostgresAdapter.from_url(pg_url, domain="shop", settings=TechnologyConfig(schema="polymigrate"))
    try:
        files.add("V1__all.sql", "CREATE TABLE orders (id bigint PRIMARY KEY, total numeric NOT NULL DEFAULT 0);\n"
                                 "CREATE INDEX orders_total ON orders (total);\n"
                                 "CREATE FUNCTION twice(x int) RETURNS int LANGUAGE sql AS 'SELECT x * 2';\n")
        migrate(a, files.applicable(), ctx())
        snap = a.snapshot()
    finally:
        a.close()
    assert set(snap["tables"]) == {"orders"}  # schema_history lives here too, but is not part of the schema
    assert snap["tables"]["orders"]["columns"]["total"] == {"type": "numeric", "not_null": True, "default": "0"}
    assert snap["indexes"]["orders_total"]["valid"] is True
    assert snap["constraints"]["orders.orders_pkey"]["definition"] == "PRIMARY KEY (id)"
    assert "twice(x integer)" in snap["functions"]


@pytest.mark.parametrize("client", [
    "host=127.0.0.1 port=5432 user=app password=s3cret dbname=shop",
    "postgresql://app:s3cret@127.0.0.1:5432/shop",
    {"host": "127.0.0.1", "port": 5432, "user": "app", "password": "s3cret", "dbname": "shop"},
])
def test_target_never_shows_the_password(client):
    a = PostgresAdapter(client, domain="shop")
    assert a.target == "postgresql://app@127.0.0.1:5432/shop"


def test_sqlalchemy_style_urls_are_accepted(pg_url):
    a = PostgresAdapter.from_url(pg_url.replace("postgresql://", "postgresql+psycopg2://"), domain="shop")
    try:
        assert a.read_ledger() == []
    finally:
        a.close()


@pytest.mark.parametrize("statement, check", [
    # the process died after the statement finished but before its progress mark was written
    ("CREATE INDEX CONCURRENTLY t_id ON t (id)", "SELECT count(*) = 1 FROM pg_indexes WHERE indexname = 't_id'"),
    ("DROP INDEX CONCURRENTLY t_old", "SELECT to_regclass('t_old') IS NULL"),
])
def test_a_finished_statement_whose_progress_mark_was_lost_is_not_run_again(pg_url, adapter, files, statement, check):
    q(pg_url, "CREATE TABLE t (id int); CREATE INDEX t_old ON t (id); CREATE TABLE gate (ok int)")
    files.add("V1__x.sql", f"{statement};\nINSERT INTO gate SELECT 1 / count(*) FROM gate;\n")
    with pytest.raises(PermanentError):
        migrate(adapter, files.applicable(), ctx())  # statement 1 done, statement 2 divides by zero
    q(pg_url, "UPDATE polymigrate.schema_history SET progress = jsonb_set(progress, '{statements_done}', '0')")
    q(pg_url, "INSERT INTO gate VALUES (1)")
    result = migrate(adapter, files.applicable(), ctx())
    assert result.applied[0]["action"] == "resume"  # would fail with "already exists"/"does not exist" otherwise
    assert q(pg_url, check) == [(True,)]
    assert [e.status for e in adapter.read_ledger()] == [Status.SUCCESS]


def test_an_unknown_placeholder_in_a_later_file_stops_the_run_before_the_first_file(pg_url, adapter, files):
    from polymigrate.errors import SpecError

    files.add("V1__a.sql", "CREATE TABLE a (id int);\n")
    files.add("V2__b.sql", "-- grants\nGRANT SELECT ON a TO ${reader_role};\n")
    with pytest.raises(SpecError, match=r"V2__b.sql:2: placeholder \$\{reader_role\} has no value"):
        migrate(adapter, files.applicable(), ctx())
    assert adapter.read_ledger() == [] and q(pg_url, "SELECT to_regclass('a')") == [(None,)]


@pytest.mark.parametrize("bad, line, message", [
    ("CREATE TABLE b (id int);\nCREATE TABLE c (id int,);\n", 2, "SQL does not parse"),
    ("CREATE TABLE b (id int);\nROLLBACK;\n", 2, "explicit ROLLBACK is not allowed"),
])
def test_a_file_that_cannot_run_after_a_good_one_fails_on_its_own_turn(pg_url, adapter, files, bad, line, message):
    """Each file's pipeline parses the next while the server commits it (issue 24): a next file that does
    not parse, or that no transaction plan can honour, changes nothing for the file before it, and fails
    on its own turn naming its file and line, as a file parsed on its turn does."""
    files.add("V1__a.sql", "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n")
    files.add("V2__b.sql", bad)
    files.add("V3__d.sql", "CREATE TABLE d (id int);\n")
    sink = RecordingSink()
    with pytest.raises(PermanentError, match=message) as info:
        migrate(adapter, files.applicable(), ctx(), sink=sink)
    assert f"V2__b.sql:{line}" in str(info.value)
    assert (sink.of("V1__a.sql"), sink.of("V2__b.sql"), sink.of("V3__d.sql")) == (
        ["migration_started", "migration_succeeded"], ["migration_started", "migration_failed"], [])
    assert [e.script for e in adapter.read_ledger()] == ["V1__a.sql"]
    assert q(pg_url, "SELECT to_regclass('a') IS NOT NULL, to_regclass('b'), to_regclass('d')") == [(True, None, None)]


def test_a_run_whose_lock_session_ends_stops_before_the_next_file(pg_url, adapter, files):
    from polymigrate.errors import TransientError

    for n in (1, 2, 3):
        files.add(f"V{n}__t{n}.sql", f"CREATE TABLE t{n} (id int);\n")

    def cut_lock_session(n, total, info):
        if n == 2:  # what idle_session_timeout or a proxy does to the idle lock session
            pid = adapter.conn.info.backend_pid
            q(pg_url, "SELECT pg_terminate_backend(%s, 5000)", pid)  # waits until that backend is gone

    with pytest.raises(TransientError, match="lost the migration lock"):
        migrate(adapter, files.applicable(), ctx(), on_progress=cut_lock_session)
    assert [e.version for e in adapter.read_ledger()] == ["1"]  # another run may hold the lock now: stop
    assert [a["script"] for a in migrate(adapter, files.applicable(), ctx()).applied] == ["V2__t2.sql", "V3__t3.sql"]


def test_each_applied_files_audit_event_names_the_tables_it_changed(adapter, files, pg_url):
    """The audit page and lineage link a run to the tables each file changed, read from the parse that
    ran the file (issue 24: one parse per file), for a file run in one transaction and one run step by
    step, with the placeholders' values."""
    from polymigrate.lineage import changed

    files.add("V1__orders.sql", "CREATE TABLE ${table} (id int PRIMARY KEY, sku text);\n"
                                "INSERT INTO ${table} VALUES (1, 'a');\n")
    files.add("V2__index.sql", "CREATE INDEX CONCURRENTLY orders_sku ON ${table} (sku);\n"
                               "ALTER TABLE ${table} RENAME TO purchases;\n")

    sink = RecordingSink()
    migrate(adapter, files.applicable(), ctx(placeholders={"table": "orders"}), sink=sink)
    succeeded = {e.script: e.details["datasets"] for e in sink.events if e.kind == "migration_succeeded"}
    assert succeeded == {
        "V1__orders.sql": [{"kind": "table", "name": "orders", "action": "created"},
                           {"kind": "table", "name": "orders", "action": "written"}],
        "V2__index.sql": [{"kind": "table", "name": "orders", "action": "altered"},
                          {"kind": "table", "name": "orders", "action": "dropped"},
                          {"kind": "table", "name": "purchases", "action": "renamed"}]}
    # the same names lineage reads from the file itself (after the run, for OpenLineage's datasets)
    for m in files.applicable():
        assert [{"kind": c.kind, "name": c.name, "action": c.action}
                for c in changed(m, {"table": "orders"})] == succeeded[m.script]
    assert q(pg_url, "SELECT id FROM purchases") == [(1,)]
