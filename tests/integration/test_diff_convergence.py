"""Issue 26's acceptance on real third-party Flyway folders (tests/fixtures/flyway/README.md).

For a folder of n files and a step k: database A gets the first k files, database B all n, both
through the project's PostgreSQL adapter. ``polymigrate diff`` A → B writes the next files into a
copy of A's folder; the adapter applies them to A. Then A's catalog equals B's table by table, index
by index, constraint by constraint; a second diff is empty; and where no undo was refused, the
generated U files (newest first) bring A back to its catalog before. Every generated file was
linted. The figures over every k are in docs/diff.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL

pytestmark = pytest.mark.timeout(300)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "flyway"
# steps chosen to cover: from empty, after the first file, in the middle, one file short of the end
STEPS = {"conductor": [0, 1, 6, 10, 17], "marquez": [0, 2, 9, 18, 26]}


def _versioned(folder: Path) -> list[Path]:
    from polymigrate.catalog import parse_name

    found = [(parse_name("postgresql", p.name), p) for p in folder.glob("V*.sql")]
    return [p for parsed, p in sorted(found, key=lambda x: x[0][1])]


def _readable(a: dict, b: dict) -> str:
    from polymigrate.snapshot_diff import diff

    lines = []
    for schema in sorted(set(a) | set(b)):
        lines += [str(d) for d in diff("postgresql", schema, a.get(schema, {}), b.get(schema, {}))]
    return "\n".join(lines[:20])


@pytest.mark.parametrize("project,k", [(p, k) for p, ks in STEPS.items() for k in ks])
def test_generated_files_bring_the_first_k_files_to_all_of_them(project, k, make_pg_database, tmp_path):
    from polymigrate.commands.diff import diff
    from polymigrate.schemadiff import postgresql as pg

    source = FIXTURES / project
    files = _versioned(source)
    assert k < len(files)
    folder_a = tmp_path / "a"
    folder_a.mkdir()
    for f in files[:k]:
        shutil.copy(f, folder_a)
    a, b = make_pg_database("pm_diff_a"), make_pg_database("pm_diff_b")
    if k:
        pg.apply_migrations(a, folder_a, domain=project)
    pg.apply_migrations(b, source, domain=project)
    before = pg.catalog(a)

    outcome = diff(a, b, write_to=folder_a, description="catch up", scratch=PG_ADMIN_URL)
    generated = outcome.generated
    versioned = [f for f in generated.files if f.kind == "versioned"]
    assert versioned, "A and B differ, so something must be generated"
    assert set(outcome.findings) == {f.name for f in generated.files}, "every generated file is linted"
    assert [p.name for p in outcome.written] == [f.name for f in generated.files]
    for f in versioned:
        if "CONCURRENTLY" in f.text:
            assert f.text.startswith("-- polymigrate: transactional=false"), f.name

    applied = pg.apply_migrations(a, folder_a, domain=project)  # only the generated files are pending
    assert applied == len(versioned)
    after, target = pg.catalog(a), pg.catalog(b)
    assert after == target, f"{project} k={k}: A is not B after the generated files:\n{_readable(after, target)}"
    assert pg.diff_statements(a, b) == [], "a second diff finds nothing"

    undo = {f.name: f for f in generated.files if f.kind == "undo"}
    if generated.refusals:
        for refusal in generated.refusals:  # each names the file, what is lost and the statement
            assert refusal.startswith("V") and "`" in refusal, refusal
        return
    for f in reversed(versioned):
        pg.apply_sql(a, undo["U" + f.name[1:]].text)
    assert pg.catalog(a) == before, f"{project} k={k}: the U files did not bring B back to A:\n" \
                                    f"{_readable(pg.catalog(a), before)}"
