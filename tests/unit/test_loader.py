"""Spec loading: every problem collected with file, line and fix; broken parts never hide good ones."""

from pathlib import Path
from textwrap import dedent

import pytest

from polymigrate.spec import load_project
from polymigrate.spec.loader import dependency_order

SPECS = Path(__file__).resolve().parents[2] / "migration_specs"

DEFAULTS = """\
regions:
  western_europe: {display_name: Western Europe}
  north_africa: {display_name: North Africa}
  sub_saharan_africa: {}
policy:
  approvals: {required: 0}
  lock_timeout: 10s
  lock_wait_seconds: 300
placeholders:
  app_role: app_rw
"""


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(dedent(text), encoding="utf-8")
    return root


def domain(name: str, yaml: str = "technologies: {postgresql: {}}\n") -> dict[str, str]:
    return {f"{name}/domain.yaml": yaml, f"{name}/postgresql/V1__init.sql": "SELECT 1;\n"}


def project(tmp_path: Path, files: dict[str, str], *, env: str = "description: dev\n"):
    base = {"environments/_defaults.yaml": DEFAULTS, "environments/development.yaml": env}
    return load_project(write(tmp_path, {**base, **files}))


def only(problems, fragment: str):
    found = [p for p in problems if fragment in p.message]
    assert len(found) == 1, f"expected one problem with {fragment!r}, got {[str(p) for p in problems]}"
    return found[0]


# --- the samples ------------------------------------------------------------------------------

def test_samples_load_without_problems():
    p = load_project(SPECS)
    assert p.problems == []
    assert set(p.environments) == {"development", "testing", "staging", "production"}
    assert {"common", "social-commerce", "warehousing", "courier-services", "centralized-dashboard"} <= set(p.domains)
    assert set(p.environments["production"].regions) == {"western_europe", "eastern_europe", "north_africa", "sub_saharan_africa"}
    assert set(p.environments["development"].regions) == {"western_europe", "north_africa"}
    assert p.environments["development"].regions["north_africa"].title == "North Africa"


def test_samples_dependency_order_puts_common_first_and_dashboard_last():
    order = dependency_order(load_project(SPECS))
    assert order[0] == "common"
    assert order[-1] == "centralized-dashboard"


# --- defaults cascade and regions -------------------------------------------------------------

def test_defaults_deep_merge_into_each_environment(tmp_path):
    p = project(tmp_path, domain("shop"), env="""\
        policy:
          approvals: {required: 2, roles: [dba]}
          lock_timeout: 3s
        """)
    pol = p.environments["development"].policy
    assert (pol.approvals.required, pol.approvals.roles) == (2, ["dba"])
    assert pol.lock_timeout == "3s"           # overridden
    assert pol.lock_wait_seconds == 300       # kept from _defaults.yaml
    assert p.environments["development"].placeholders == {"app_role": "app_rw"}


def test_environment_lists_its_own_regions_and_defaults_only_fill_them(tmp_path):
    p = project(tmp_path, domain("shop"), env="""\
        regions:
          north_africa:
            connections: {postgresql: pg_cairo}
          mars_base: {display_name: Mars}
        """)
    env = p.environments["development"]
    assert set(env.regions) == {"north_africa", "mars_base"}       # western_europe not inherited
    assert env.regions["north_africa"].title == "North Africa"     # filled from the defaults
    assert env.connection_id("north_africa", "postgresql") == "pg_cairo"
    assert env.connection_id("north_africa", "redis") == "polymigrate_redis_development_north_africa"


def test_regions_as_a_list_pick_from_the_defaults(tmp_path):
    p = project(tmp_path, domain("shop"), env="regions: [western_europe, north_africa]\n")
    env = p.environments["development"]
    assert list(env.regions) == ["western_europe", "north_africa"]
    assert env.regions["western_europe"].title == "Western Europe"


def test_environment_without_regions_inherits_all_default_regions(tmp_path):
    p = project(tmp_path, domain("shop"))
    assert set(p.environments["development"].regions) == {"western_europe", "north_africa", "sub_saharan_africa"}


def test_domain_region_subset(tmp_path):
    p = project(tmp_path, domain("shop", "regions: [north_africa]\ntechnologies: {postgresql: {}}\n"))
    env = p.environments["development"]
    assert [r.name for r in p.regions_of(p.domains["shop"], env)] == ["north_africa"]


# --- malformed input: file and line -----------------------------------------------------------

def test_malformed_yaml_names_file_and_line(tmp_path):
    p = project(tmp_path, {**domain("shop", "description: ok\ntechnologies:\n  postgresql: {schema: [unclosed\n"),
                           **domain("billing")})
    problem = only(p.problems, "malformed YAML")
    assert problem.file.endswith("shop/domain.yaml")
    assert problem.line == 4  # where the parser gave up: the end of the unclosed flow sequence
    assert "shop" in p.broken_domains and "billing" in p.domains


def test_unknown_key_names_file_line_and_key(tmp_path):
    p = project(tmp_path, {"shop/domain.yaml": "description: x\nowners: [a]\ndepnds_on: [common]\n",
                           "shop/postgresql/V1__x.sql": "SELECT 1;"})
    problem = only(p.problems, "unknown key 'depnds_on'")
    assert (Path(problem.file).name, problem.line) == ("domain.yaml", 3)
    assert "spelling" in problem.hint


def test_unknown_nested_key_in_environment(tmp_path):
    p = project(tmp_path, domain("shop"), env="description: dev\npolicy:\n  aprovals: {required: 1}\n")
    problem = only(p.problems, "unknown key 'policy.aprovals'")
    assert problem.file.endswith("development.yaml") and problem.line == 3
    assert "development" not in p.environments


def test_bad_type_names_the_field_line_and_value(tmp_path):
    p = project(tmp_path, domain("shop"), env="description: dev\npolicy:\n  approvals:\n    required: two\n")
    problem = only(p.problems, "policy.approvals.required")
    assert problem.line == 4
    assert "'two'" in problem.hint


def test_unknown_technology_names_its_line(tmp_path):
    p = project(tmp_path, {"shop/domain.yaml": "technologies:\n  postgres: {}\n"})
    problem = only(p.problems, "technologies.postgres")
    assert problem.line == 2


def test_bad_window_time_names_the_line(tmp_path):
    p = project(tmp_path, domain("shop"), env="policy:\n  window:\n    start: '25:00'\n")
    problem = only(p.problems, "policy.window.start")
    assert problem.line == 3 and "HH:MM" in problem.message


def test_environment_name_must_match_its_file(tmp_path):
    p = project(tmp_path, domain("shop"), env="name: develop\n")
    problem = only(p.problems, "differs from the file name")
    assert problem.line == 1 and "development" not in p.environments


def test_environment_file_that_is_not_a_mapping(tmp_path):
    p = project(tmp_path, domain("shop"), env="- western_europe\n")
    assert only(p.problems, "must be a mapping").file.endswith("development.yaml")


def test_empty_domain_yaml_is_a_domain_named_after_its_folder_with_a_note(tmp_path):
    p = project(tmp_path, {"shop/domain.yaml": ""})
    assert p.problems == []
    assert p.domains["shop"].technologies == {}
    assert any("declares no technologies" in n.message for n in p.notes)


def test_domain_name_must_match_its_folder(tmp_path):
    p = project(tmp_path, domain("shop", "name: store\ntechnologies: {postgresql: {}}\n"))
    problem = only(p.problems, "differs from the folder name 'shop'")
    assert problem.line == 1
    assert "shop" in p.broken_domains and "store" not in p.domains


def test_non_utf8_domain_yaml(tmp_path):
    p = project(tmp_path, {"shop/domain.yaml": "owners: [a]\ndescription: caf\xe9\n".encode("latin-1")})
    problem = only(p.problems, "not UTF-8")
    assert problem.file.endswith("shop/domain.yaml") and problem.line == 2 and "UTF-8" in problem.hint


def test_declared_technology_without_folder(tmp_path):
    p = project(tmp_path, {"shop/domain.yaml": "description: x\ntechnologies:\n  redis: {key_prefix: 'shop:'}\n"})
    problem = only(p.problems, "has no folder")
    assert problem.line == 3 and "shop" in p.broken_domains


def test_undeclared_technology_folder_is_a_note_not_an_error(tmp_path):
    p = project(tmp_path, {**domain("shop"), "shop/redis/1-x.lua": "return 0"})
    assert p.problems == []
    assert any("'redis' is not under 'technologies:'" in n.message for n in p.notes)


def test_folder_without_domain_yaml_is_a_note(tmp_path):
    p = project(tmp_path, {**domain("shop"), "docs/readme.md": "hello"})
    assert p.problems == [] and any("no domain.yaml" in n.message for n in p.notes)


def test_canary_region_of_a_domain_must_be_one_of_its_regions(tmp_path):
    p = project(tmp_path, domain("shop", "regions: [north_africa]\nrollout: {strategy: canary, canary_region: western_europe}\n"
                                         "technologies: {postgresql: {}}\n"))
    problem = only(p.problems, "canary_region 'western_europe'")
    assert problem.line == 2


def test_unknown_region_and_environment_in_a_domain(tmp_path):
    p = project(tmp_path, domain("shop", "environments: [development, prod]\nregions: [atlantis]\n"
                                         "technologies: {postgresql: {}}\n"))
    assert only(p.problems, "environment 'prod' is not defined").line == 1
    assert only(p.problems, "region 'atlantis'").line == 2


# --- depends_on -------------------------------------------------------------------------------

def test_unknown_depends_on_names_the_line(tmp_path):
    p = project(tmp_path, {**domain("shop", "description: x\ndepends_on:\n  - common\n  - comon\n"
                                            "technologies: {postgresql: {}}\n"), **domain("common")})
    problem = only(p.problems, "depends_on 'comon' is not a domain")
    assert problem.line == 4 and "common" in problem.hint
    assert "common" in p.domains and "shop" not in p.domains


def test_cycle_breaks_its_members_only(tmp_path):
    p = project(tmp_path, {**domain("a", "depends_on: [b]\ntechnologies: {postgresql: {}}\n"),
                           **domain("b", "technologies: {postgresql: {}}\ndepends_on: [c]\n"),
                           **domain("c", "depends_on: [a]\ntechnologies: {postgresql: {}}\n"),
                           **domain("d", "depends_on: [e]\ntechnologies: {postgresql: {}}\n"),
                           **domain("e")})
    cycles = [x for x in p.problems if "cycle" in x.message]
    assert {Path(x.file).parent.name: x.line for x in cycles} == {"a": 1, "b": 2, "c": 1}
    assert "between 'a', 'b', 'c'" in cycles[0].message
    assert set(p.domains) == {"d", "e"}
    assert dependency_order(p) == ["e", "d"]


def test_self_dependency_is_a_cycle(tmp_path):
    p = project(tmp_path, domain("a", "depends_on: [a]\ntechnologies: {postgresql: {}}\n"))
    assert "'a' depends on itself" in only(p.problems, "cycle").message


def test_depending_on_a_broken_domain(tmp_path):
    p = project(tmp_path, {**domain("shop", "depends_on: [common]\ntechnologies: {postgresql: {}}\n"),
                           "common/domain.yaml": "technologies: {postgresql: {}}\nbogus: 1\n"})
    problem = only(p.problems, "which is broken")
    assert problem.file.endswith("shop/domain.yaml") and problem.line == 1
    assert p.domains == {}


def test_one_broken_domain_leaves_the_others_loadable(tmp_path):
    p = project(tmp_path, {**domain("good"), **domain("bad", "technologies: [postgresql]\n"), **domain("fine")})
    assert set(p.domains) == {"good", "fine"}
    assert set(p.broken_domains) == {"bad"}
    assert all(x.domain == "bad" for x in p.problems)


# --- credentials ------------------------------------------------------------------------------

@pytest.mark.parametrize("yaml_text, line, fragment", [
    ("description: x\ntechnologies:\n  postgresql: {}\npassword: hunter2secret\n", 4, "inline credential under 'password'"),
    ("description: x\ntechnologies:\n  postgresql:\n    db_password: hunter2secret\n", 4, "inline credential under 'db_password'"),
    ("description: x\napi_token: hunter2secret\ntechnologies: {postgresql: {}}\n", 2, "inline credential under 'api_token'"),
    ("description: 'see postgresql://app:hunter2secret@db:5432/shop'\ntechnologies: {postgresql: {}}\n", 1, "URI with an inline password"),
    ("tags: ['redis://:hunter2secret@cache:6379/0']\ntechnologies: {postgresql: {}}\n", 1, "URI with an inline password"),
    ("description: x\nowners: ['Bearer hunter2secretABCDEFG']\ntechnologies: {postgresql: {}}\n", 2, "looks like a token"),
    ("description: ghp_hunter2secretABCDEFGHIJKLMNOPQRSTUVWXYZ012\ntechnologies: {postgresql: {}}\n", 1, "looks like a token"),
])
def test_inline_credentials_in_a_domain_are_rejected(tmp_path, yaml_text, line, fragment):
    p = project(tmp_path, {**domain("shop", yaml_text), **domain("other")})
    problem = only(p.problems, fragment)
    assert problem.line == line and "Airflow connection" in problem.hint
    assert "shop" not in p.domains and "other" in p.domains
    assert all("hunter2secret" not in str(x) for x in p.problems)  # never echoed into logs


def test_inline_credentials_in_an_environment_region(tmp_path):
    p = project(tmp_path, domain("shop"), env="regions:\n  north_africa:\n    placeholders:\n      smtp_password: s3cretvalue\n")
    problem = only(p.problems, "smtp_password")
    assert problem.file.endswith("development.yaml") and problem.line == 4
    assert "development" not in p.environments


def test_inline_credentials_in_defaults_and_other_top_level_files(tmp_path):
    p = project(tmp_path, {**domain("shop"), "approvers.yaml": "users:\n  ann: [dba]\ntoken: abcdefgh\n"})
    assert only(p.problems, "under 'token'").file.endswith("approvers.yaml")


def test_empty_secret_like_keys_are_fine(tmp_path):
    # the name of a key alone is not a credential; a connection id pointing at one is the right way
    p = project(tmp_path, domain("shop", "description: uses token auth via its Airflow connection\n"
                                         "technologies: {postgresql: {}}\n"))
    assert p.problems == []


def test_a_scheduled_environment_that_waits_for_approval_gets_a_note(tmp_path):
    (tmp_path / "environments").mkdir()
    (tmp_path / "environments" / "staging.yaml").write_text(
        "regions: {r1: null}\npolicy:\n  approvals: {required: 1}\n  schedule: '0 2 * * *'\n")
    p = load_project(tmp_path)
    assert p.ok and "staging" in p.environments
    [note] = [n for n in p.notes if "scheduled" in n.message]
    assert note.line == 4 and "approvals.required: 0" in note.hint
