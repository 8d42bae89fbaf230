"""Backfill files as validate sees them (no server): the header, the one UPDATE, clear problems."""

from __future__ import annotations

import pytest

from polymigrate.adapters.postgresql.backfill import Settings, parse
from polymigrate.catalog import discover, parse_directives
from polymigrate.errors import PermanentError


def problems_of(tmp_path, name: str, text: str, technology: str = "postgresql") -> list[str]:
    folder = tmp_path / technology
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return [str(p) for p in discover("shop", technology, folder).problems]


def test_the_update_is_split_into_table_head_and_where():
    spec = parse("-- polymigrate: backfill=true\n\n-- why\nUPDATE shop.users AS u SET full_name = u.first || ' ' || "
                 "u.last FROM teams t WHERE u.team = t.id AND u.full_name IS NULL AND u.first LIKE 'a%';\n", "V2.sql")
    assert (spec.schema, spec.table, spec.alias, spec.line) == ("shop", "users", "u", 4)
    assert spec.head == "UPDATE shop.users AS u SET full_name = u.first || ' ' || u.last FROM teams AS t"
    assert spec.where == "u.team = t.id AND u.full_name IS NULL AND u.first LIKE 'a%'"


@pytest.mark.parametrize("body,message", [
    ("UPDATE a SET x = 1; UPDATE b SET y = 2;", "exactly one UPDATE statement; this one has UpdateStmt, UpdateStmt"),
    ("DELETE FROM a WHERE x = 1;", "exactly one UPDATE statement; this one has DeleteStmt"),
    ("WITH q AS (SELECT 1) UPDATE a SET x = 1;", "cannot have WITH"),
    ("UPDATE a SET x = 1 RETURNING x;", "cannot have RETURNING"),
    ("UPDATE ONLY a SET x = 1;", "cannot use ONLY"),
    ("UPDATE a SET x = ;", "SQL does not parse"),
])
def test_what_a_backfill_cannot_be(body, message):
    with pytest.raises(PermanentError, match=message) as exc:
        parse(body, "V9__b.sql")
    assert "V9__b.sql" in str(exc.value)


def test_validate_names_the_file_and_line_of_a_bad_backfill(tmp_path):
    [p] = problems_of(tmp_path, "V2__b.sql", "-- polymigrate: backfill=true\nUPDATE a SET x = 1;\nSELECT 1;\n")
    assert p.startswith(str(tmp_path / "postgresql" / "V2__b.sql")) and "exactly one UPDATE" in p


@pytest.mark.parametrize("name,text,message", [
    ("V2__b.sql", "-- polymigrate: key=id\nUPDATE a SET x = 1;\n", "key only apply to a backfill"),
    ("V2__b.sql", "-- polymigrate: backfill=true, transactional=true\nUPDATE a SET x = 1;\n", "contradicts"),
    ("R__b.sql", "-- polymigrate: backfill=true\nUPDATE a SET x = 1;\n", "a repeatable file cannot be a backfill"),
    ("V2__b.sql", "-- polymigrate: backfill=yes\nUPDATE a SET x = 1;\n", "backfill=yes"),
    ("V2__b.sql", "-- polymigrate: backfill=true, batch_time=fast\nUPDATE a SET x = 1;\n", "batch_time=fast is not a duration"),
    ("V2__b.sql", "-- polymigrate: backfill=true, key=a;b\nUPDATE a SET x = 1;\n", "key=a;b is not a column name"),
])
def test_header_problems(tmp_path, name, text, message):
    found = problems_of(tmp_path, name, text)
    assert any(message in p for p in found), found


def test_backfill_is_for_postgresql(tmp_path):
    [p] = problems_of(tmp_path, "1-b.lua", "-- polymigrate: backfill=true\nreturn 1\n", "redis")
    assert "backfill=true is for PostgreSQL files" in p


def test_a_backfill_with_placeholders_is_parsed_when_it_runs(tmp_path):
    assert problems_of(tmp_path, "V2__b.sql", "-- polymigrate: backfill=true\nUPDATE ${schema}.a SET x = 1;\n") == []


def test_settings_from_the_header():
    from polymigrate.catalog import Directives, Migration, Kind
    from pathlib import Path
    d, problems = parse_directives("-- polymigrate: backfill=true, key=Id, batch_size=5, batch_time=200ms, "
                                   "max_batch=20000, max_lag=2s, lock_timeout=300ms\nUPDATE a SET x = 1;\n", "f")
    assert problems == [] and d.key == "id" and d.backfill
    m = Migration("shop", "postgresql", Kind.VERSIONED, None, "b", "V2__b.sql", Path("V2__b.sql"), 0, "", "", d)
    s = Settings.of(m)
    assert (s.batch_size, s.max_batch, s.batch_time, s.max_lag, s.lock_timeout) == (10, 20000, 0.2, 2.0, "300ms")
    assert parse_directives('-- polymigrate: backfill=true, key="UserId"\n', "f")[0].key == "UserId"
