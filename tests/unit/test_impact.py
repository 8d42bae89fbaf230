"""Verify's performance evidence (polymigrate.impact): which indexes a file drops, and the checks."""

from polymigrate import impact
from polymigrate.catalog import load_file


def test_drop_index_statements_are_found_and_nothing_else(tmp_path):
    root = tmp_path / "postgresql"
    root.mkdir()
    (root / "V2__cleanup.sql").write_text(
        "DROP INDEX CONCURRENTLY IF EXISTS sales.orders_customer, orders_note;\n"
        "DROP TABLE legacy;\nALTER TABLE orders DROP CONSTRAINT orders_pk;\n", encoding="utf-8")
    m, problems, _ = load_file("shop", "postgresql", root, root / "V2__cleanup.sql")
    assert m is not None, problems
    assert impact.dropped_indexes(m) == ["sales.orders_customer", "orders_note"]


def test_a_used_index_fails_with_its_statements_and_an_unused_one_passes():
    used = {"dropped_indexes": {"orders_customer": {"table": "orders", "scans": 7, "statements": [
        {"query": "SELECT count(*) FROM orders WHERE customer = $1", "calls": 7, "mean_ms": 0.12}]}}}
    (check,) = impact.checks([used], min_scans=1)
    assert not check.ok and check.name == impact.CHECK
    assert "statements on orders: SELECT count(*) FROM orders WHERE customer = $1 (7 calls, mean 0.12 ms)" in check.detail
    (check,) = impact.checks([used], min_scans=8)
    assert check.ok and check.detail == "dropped orders_customer: used fewer than 8 time(s)"
    assert impact.checks([], min_scans=1) == []
