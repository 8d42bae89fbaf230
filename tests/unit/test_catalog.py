"""Migration discovery: names, order, checksums, directives, placeholders, JSON formats."""

import ast
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from polymigrate.catalog import Kind, discover, discover_domain, next_version, parse_directives, parse_name
from polymigrate.checksums import flyway_checksum
from polymigrate.errors import SpecError
from polymigrate.spec import formats, load_project

SPECS = Path(__file__).resolve().parents[2] / "migration_specs"


def write(folder: Path, files: dict) -> Path:
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return folder


def problems_of(cat, fragment: str):
    found = [p for p in cat.problems if fragment in p.message]
    assert found, f"no problem with {fragment!r} in {[str(p) for p in cat.problems]}"
    return found


# --- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind, version, desc", [
    ("V1__create_users.sql", Kind.VERSIONED, "1", "create users"),
    ("V1_1__add_index.sql", Kind.VERSIONED, "1.1", "add index"),
    ("V1.10__backfill.sql", Kind.VERSIONED, "1.10", "backfill"),
    ("V202401151200__create_couriers.sql", Kind.VERSIONED, "202401151200", "create couriers"),
    ("U2__contract.sql", Kind.UNDO, "2", "contract"),
    ("R__user_directory.sql", Kind.REPEATABLE, None, "user directory"),
])
def test_postgresql_names(name, kind, version, desc):
    k, v, d = parse_name("postgresql", name)
    assert (k, None if v is None else str(v), d) == (kind, version, desc)


@pytest.mark.parametrize("technology, name, version, desc", [
    ("mongodb", "1-create-posts.json", "1", "create posts"),
    ("mongodb", "3-posts-author-full-name.py", "3", "posts author full name"),
    ("mongodb", "2.1-backfill.js", "2.1", "backfill"),
    ("redis", "202611250900-position-ttl.lua", "202611250900", "position ttl"),
    ("elasticsearch", "2_1-products-v2.json", "2.1", "products v2"),
])
def test_dash_names(technology, name, version, desc):
    kind, v, d = parse_name(technology, name)
    assert (kind, str(v), d) == (Kind.VERSIONED, version, desc)


@pytest.mark.parametrize("technology, name, fragment", [
    ("postgresql", "V__no_version.sql", "missing version"),
    ("postgresql", "R1__versioned_repeatable.sql", "repeatable migration has no version"),
    ("postgresql", "V1_single_underscore.sql", "expected V<version>__<description>.sql"),
    ("postgresql", "create_users.sql", "expected V<version>__<description>.sql"),
    ("postgresql", "Vone__x.sql", "invalid version 'one'"),
    ("mongodb", "create-posts.json", "expected <version>-<description>.json"),
    ("redis", "1_rename.lua", "expected <version>-<description>.lua"),
])
def test_unparsable_names_raise_with_the_expected_pattern(technology, name, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.").replace("<", ".").replace(">", ".")):
        parse_name(technology, name)


def test_other_extensions_are_not_migrations():
    assert parse_name("postgresql", "README.md") is None
    assert parse_name("redis", "1-x.json") is None


# --- discovery --------------------------------------------------------------------------------

def test_discovers_recursively_and_orders_by_version_not_folder(tmp_path):
    write(tmp_path, {
        "tables/V1__a.sql": "SELECT 1;",
        "tables/V1.10__c.sql": "SELECT 1;",
        "indexes/V1.9__b.sql": "SELECT 1;",
        "views/R__z_view.sql": "SELECT 1;",
        "functions/R__a_func.sql": "SELECT 1;",
        "V2__d.sql": "SELECT 1;",
        "U2__d.sql": "SELECT 1;",
    })
    cat = discover("shop", "postgresql", tmp_path)
    assert cat.problems == []
    assert [m.script for m in cat.migrations["postgresql"]] == [
        "tables/V1__a.sql", "indexes/V1.9__b.sql", "tables/V1.10__c.sql", "V2__d.sql",
        "functions/R__a_func.sql", "views/R__z_view.sql", "U2__d.sql"]
    assert [m.script for m in cat.applicable("postgresql")][-1] == "views/R__z_view.sql"
    assert [str(m.version) for m in cat.undo("postgresql")] == ["2"]


def test_duplicate_versions_1_and_1_0_name_both_files(tmp_path):
    write(tmp_path, {"tables/V1__a.sql": "SELECT 1;", "indexes/V1.0__b.sql": "SELECT 2;", "V2__c.sql": "SELECT 3;"})
    cat = discover("shop", "postgresql", tmp_path)
    (problem,) = problems_of(cat, "duplicate version")
    assert "V1__a.sql" in problem.file + problem.message and "V1.0__b.sql" in problem.file + problem.message
    assert "polymigrate new" in problem.hint


def test_duplicate_repeatable_descriptions(tmp_path):
    write(tmp_path, {"a/R__grants.sql": "SELECT 1;", "b/R__grants.sql": "SELECT 2;"})
    problems_of(discover("shop", "postgresql", tmp_path), "duplicate repeatable 'grants'")


def test_unparsable_name_is_an_error_naming_the_file(tmp_path):
    write(tmp_path, {"V1__ok.sql": "SELECT 1;", "tables/create_users.sql": "SELECT 1;"})
    (problem,) = problems_of(discover("shop", "postgresql", tmp_path), "cannot parse migration name")
    assert problem.file.endswith("tables/create_users.sql") and problem.hint == "rename the file"


@pytest.mark.parametrize("content", ["", "   \n\n", "\ufeff", "\ufeff\r\n"])
def test_empty_files_are_errors(tmp_path, content):
    write(tmp_path, {"V1__empty.sql": content})
    (problem,) = problems_of(discover("shop", "postgresql", tmp_path), "empty migration file")
    assert problem.file.endswith("V1__empty.sql")


def test_non_utf8_file_is_an_error_with_the_byte(tmp_path):
    write(tmp_path, {"V1__latin1.sql": "-- menu\nSELECT 'caf\xe9';".encode("latin-1")})
    (problem,) = problems_of(discover("shop", "postgresql", tmp_path), "not UTF-8")
    assert "byte 0xe9 at offset 19" in problem.message and problem.line == 2 and "UTF-8" in problem.hint


def test_other_extensions_are_ignored_with_a_note(tmp_path):
    write(tmp_path, {"V1__a.sql": "SELECT 1;", "README.md": "# notes", "tables/.DS_Store": "x"})
    cat = discover("shop", "postgresql", tmp_path)
    assert cat.problems == []
    assert [Path(n.file).name for n in cat.notes] == ["README.md"]
    assert "ignored" in cat.notes[0].message


def test_pycache_next_to_python_migrations_is_skipped(tmp_path):
    write(tmp_path, {"1-transform.py": "def up(db):\n    pass\n", "__pycache__/1-transform.cpython-311.pyc": b"\x00\x01"})
    cat = discover("shop", "mongodb", tmp_path)
    assert cat.problems == [] and cat.notes == []
    assert len(cat.migrations["mongodb"]) == 1


def test_undo_without_versioned_file(tmp_path):
    write(tmp_path, {"V1__a.sql": "SELECT 1;", "U3__c.sql": "SELECT 1;"})
    problems_of(discover("shop", "postgresql", tmp_path), "undo for version 3, which has no V file")


def test_checksum_ignores_line_endings_and_bom_but_sha256_does_not(tmp_path):
    write(tmp_path / "lf", {"V1__a.sql": "CREATE TABLE t (id int);\nSELECT 1;\n"})
    write(tmp_path / "crlf", {"V1__a.sql": "\ufeffCREATE TABLE t (id int);\r\nSELECT 1;\r\n"})
    lf = discover("s", "postgresql", tmp_path / "lf").versioned("postgresql")[0]
    crlf = discover("s", "postgresql", tmp_path / "crlf").versioned("postgresql")[0]
    assert lf.checksum == crlf.checksum == flyway_checksum("CREATE TABLE t (id int);SELECT 1;")
    assert lf.sha256 != crlf.sha256
    assert not crlf.text.startswith("\ufeff")


# --- directives and placeholders --------------------------------------------------------------

def test_header_directives(tmp_path):
    write(tmp_path, {"V1__idx.sql": "-- build without blocking writes\n-- polymigrate: transactional=false, lock_timeout=5s\n"
                                    "-- polymigrate: statement_timeout=30min batch_size=500\n"
                                    "CREATE INDEX CONCURRENTLY i ON t (c);\n-- polymigrate: pause_ms=1\n"})
    m = discover("s", "postgresql", tmp_path).versioned("postgresql")[0]
    d = m.directives
    assert (d.transactional, d.lock_timeout, d.statement_timeout, d.batch_size) == (False, "5s", "30min", 500)
    assert d.pause_ms is None  # directives after the first statement are plain comments


@pytest.mark.parametrize("line, fragment", [
    ("-- polymigrate: transactionl=false", "unknown directive 'transactionl=false'"),
    ("-- polymigrate: transactional=no", "transactional=no"),
    ("-- polymigrate: lock_timeout=soon", "not a duration"),
    ("# polymigrate: batch_size=lots", "not a whole number"),
])
def test_bad_directives_name_the_line(line, fragment):
    _, problems = parse_directives(f"-- header\n{line}\nSELECT 1;", "V1__x.sql")
    assert [(p.line, fragment in p.message) for p in problems] == [(2, True)]


def test_placeholders_render_and_unknown_ones_name_the_line(tmp_path):
    write(tmp_path, {"V1__grants.sql": "GRANT SELECT ON t TO ${app_role};\n\nGRANT USAGE ON SCHEMA s TO ${reporting_role};\n"})
    m = discover("s", "postgresql", tmp_path).versioned("postgresql")[0]
    assert m.render({"app_role": "app_rw", "reporting_role": "bi"}).splitlines()[0] == "GRANT SELECT ON t TO app_rw;"
    with pytest.raises(SpecError) as err:
        m.render({"app_role": "app_rw"})
    (problem,) = err.value.problems
    assert problem.line == 3 and "${reporting_role}" in problem.message and "placeholders" in problem.hint


# --- JSON formats -----------------------------------------------------------------------------

def test_invalid_json_names_the_line(tmp_path):
    write(tmp_path, {"1-x.json": '{\n  "description": "x",\n  "commands": [\n    {"create": "posts",}\n  ]\n}\n'})
    (problem,) = problems_of(discover("s", "mongodb", tmp_path), "invalid JSON")
    assert problem.line == 4


@pytest.mark.parametrize("technology, body, fragment", [
    ("mongodb", {"description": "x", "commands": []}, "commands"),
    ("mongodb", {"description": "x", "commands": [{}]}, "command 1 is empty"),
    ("mongodb", {"description": "x", "command": [{"create": "x"}]}, "unknown key 'command'"),
    ("elasticsearch", {"steps": [{"reindx": {"source": "a", "dest": "b"}}]}, "unknown key 'steps.0.reindx'"),
    ("elasticsearch", {"steps": [{"create_index": {"index": "a"}, "delete_index": {"index": "b"}}]}, "exactly one key"),
    ("elasticsearch", {"steps": [{"switch_alias": {"alias": "products", "from": "a"}}]}, "steps.0.switch_alias.to"),
    ("elasticsearch", {"steps": [{"request": {"method": "PATCH", "path": "/x"}}]}, "steps.0.request.method"),
])
def test_json_format_errors_name_the_field(tmp_path, technology, body, fragment):
    write(tmp_path, {"1-x.json": json.dumps(body)})
    problems_of(discover("s", technology, tmp_path), fragment)


def test_placeholders_inside_json_do_not_break_the_format_check(tmp_path):
    write(tmp_path, {"1-x.json": '{"steps": [{"create_index": {"index": "metrics-${region}", '
                                 '"body": {"settings": {"number_of_replicas": ${replicas}}}}}]}'})
    cat = discover("s", "elasticsearch", tmp_path)
    assert cat.problems == []
    step = formats.parse("elasticsearch", cat.versioned("elasticsearch")[0].render({"region": "eu", "replicas": "2"})).steps[0]
    assert (step.kind, step.args.index, step.args.body["settings"]["number_of_replicas"]) == ("create_index", "metrics-eu", 2)


# --- the samples ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def samples():
    project = load_project(SPECS)
    return {name: discover_domain(d) for name, d in project.domains.items()}


def test_samples_discover_without_problems(samples):
    assert {n: [str(p) for p in c.problems] for n, c in samples.items() if c.problems} == {}


def test_samples_show_flyway_ordering_and_the_expand_contract_steps(samples):
    scripts = [m.script for m in samples["social-commerce"].versioned("postgresql")]
    assert scripts.index("tables/V1.9__expand_users_full_name.sql") + 1 == scripts.index("tables/V1.10__backfill_users_full_name.sql")
    assert scripts[-3:] == ["tables/V2__check_users_full_name_present.sql", "tables/V2.1__users_full_name_not_null.sql",
                            "tables/V3__drop_users_first_last_name.sql"]
    assert [m.script for m in samples["social-commerce"].undo("postgresql")] == [
        "tables/U2.1__users_full_name_not_null.sql", "tables/U3__drop_users_first_last_name.sql"]
    backfill = next(m for m in samples["social-commerce"].versioned("postgresql") if str(m.version) == "1.10")
    assert backfill.directives.backfill is True and backfill.phase == "migrate"


def test_the_full_name_sample_is_one_release_in_phases_across_the_four_engines(samples):
    cat = samples["social-commerce"]
    declared = {t: {m.script: m.phase for m in cat.versioned(t) if m.declares_phase}
                for t in ("postgresql", "mongodb", "elasticsearch", "redis")}
    assert declared["postgresql"] == {"tables/V1.9__expand_users_full_name.sql": "expand",
                                      "tables/V1.10__backfill_users_full_name.sql": "migrate",
                                      "tables/V2__check_users_full_name_present.sql": "contract",
                                      "tables/V2.1__users_full_name_not_null.sql": "contract",
                                      "tables/V3__drop_users_first_last_name.sql": "contract"}
    assert declared["mongodb"]["collections/2.1-index-posts-author-full-name.json"] == "expand"
    assert declared["mongodb"]["transforms/3-posts-author-full-name.py"] == "migrate"
    assert declared["mongodb"]["transforms/3.1-posts-drop-author-first-last-name.py"] == "contract"
    assert declared["elasticsearch"] == {"2-people-v2-full-name-autocomplete.json": "migrate"}
    assert declared["redis"] == {"4-profile-cache-full-name.lua": "migrate"}
    assert {t: cat.phases(t) for t in declared} == {
        "postgresql": ["expand", "migrate", "contract"], "mongodb": ["expand", "migrate", "contract"],
        "elasticsearch": ["expand", "migrate"], "redis": ["expand", "migrate"]}


def test_samples_cover_all_four_technologies(samples):
    used = {t for c in samples.values() for t, ms in c.migrations.items() if ms}
    assert used == {"postgresql", "mongodb", "redis", "elasticsearch"}


def test_sample_json_files_parse_with_the_documented_formats(samples):
    kinds = set()
    for cat in samples.values():
        for tech in ("mongodb", "elasticsearch"):
            for m in cat.migrations.get(tech, []):
                if m.path.suffix == ".json":
                    parsed = formats.parse(tech, m.text)
                    kinds |= {s.kind for s in getattr(parsed, "steps", [])}
    assert {"create_index", "index_template", "component_template", "blue_green", "switch_alias", "put_mapping"} <= kinds


def test_products_v2_is_a_blue_green_behind_the_products_alias(samples):
    m = next(m for m in samples["warehousing"].versioned("elasticsearch") if "products v2" in m.description)
    (step,) = formats.parse("elasticsearch", m.text).steps
    assert (step.kind, step.args.alias, step.args.catch_up.field) == ("blue_green", "products", "updated_at")


def test_every_elasticsearch_step_kind_has_an_implementation():
    from polymigrate.adapters.elasticsearch.steps import SIMPLE_STEPS
    assert set(formats.STEP_KINDS) == set(SIMPLE_STEPS) | {"blue_green"}


def test_sample_python_transform_defines_up_and_down(samples):
    transforms = [m for m in samples["social-commerce"].migrations["mongodb"] if m.path.suffix == ".py"]
    assert len(transforms) == 2
    for m in transforms:
        functions = {n.name for n in ast.parse(m.text).body if isinstance(n, ast.FunctionDef)}
        assert {"up", "down"} <= functions, m.script
    assert "schemaVersion" in transforms[0].text


# --- next_version -----------------------------------------------------------------------------

def test_next_version(tmp_path):
    write(tmp_path / "a", {"V1__a.sql": "x", "V1.9__b.sql": "x", "V1.10__c.sql": "x"})
    assert next_version(discover("s", "postgresql", tmp_path / "a").versioned("postgresql")) == "2"
    assert next_version([]) == "1"


def test_next_version_keeps_timestamps(tmp_path):
    write(tmp_path, {"V202401151200__a.sql": "x"})
    migs = discover("s", "postgresql", tmp_path).versioned("postgresql")
    assert next_version(migs, now=datetime(2026, 3, 4, 5, 6, tzinfo=timezone.utc)) == "202603040506"
    # a clock behind the newest file still yields a higher version
    assert next_version(migs, now=datetime(2020, 1, 1, tzinfo=timezone.utc)) == "202401151201"


def test_a_description_longer_than_the_ledger_keeps_is_refused(tmp_path):
    folder = tmp_path / "postgresql"
    folder.mkdir()
    (folder / ("V1__" + "x" * 201 + ".sql")).write_text("SELECT 1;\n")
    cat = discover("shop", "postgresql", folder)
    assert cat.migrations["postgresql"] == []
    assert "description is 201 characters; the ledger keeps 200" in str(cat.problems[0])
