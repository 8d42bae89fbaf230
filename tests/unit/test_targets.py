"""What a run skips, and why: the lines the plan task logs and records."""

from __future__ import annotations

import textwrap

from polymigrate.targets import default_technologies, served, skipped
from polymigrate.spec import load_project


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")


def project(tmp_path):
    write(tmp_path / "environments/staging.yaml", """
        regions:
          west: {}
          south: {technologies: [postgresql]}
        technologies: [postgresql, redis]
    """)
    write(tmp_path / "shop/domain.yaml", "technologies: {postgresql: {}, redis: {}, elasticsearch: {}}\n")
    for tech, name in (("postgresql", "V1__a.sql"), ("redis", "1-a.lua"), ("elasticsearch", "1-a.json")):
        write(tmp_path / "shop" / tech / name, "{}" if tech == "elasticsearch" else "select 1;" if tech == "postgresql" else "return {'0', 0}")
    p = load_project(tmp_path)
    assert p.ok, p.problems
    return p, p.domains["shop"], p.environments["staging"]


def test_served_and_defaults(tmp_path):
    p, shop, staging = project(tmp_path)
    assert served(p, shop, staging) == {"west": ["postgresql", "redis"], "south": ["postgresql"]}
    assert default_technologies(p, shop, staging) == ["postgresql", "redis"]


def test_skipped_says_what_and_why(tmp_path):
    p, shop, staging = project(tmp_path)
    assert skipped(p, shop, staging) == [
        "redis in south: region south of staging does not serve redis (its technologies: postgresql)",
        "elasticsearch: staging does not serve elasticsearch (technologies: postgresql, redis in environments/staging.yaml)",
    ]
    assert skipped(p, shop, staging, regions=["west"], technologies=["postgresql"]) == [
        "region south: not selected in this run (param regions)",
        "redis: not selected in this run (param technologies)",
        "elasticsearch: staging does not serve elasticsearch (technologies: postgresql, redis in environments/staging.yaml)",
    ]


def test_what_the_specs_leave_out_is_said_with_why(tmp_path):
    from polymigrate.targets import left_out_files

    write(tmp_path / "environments/staging.yaml", """
        regions: {west: {}}
        technologies: [postgresql, redis]
        left_out:
          elasticsearch: no OpenSearch on this machine
          shop/redis/2-b.lua: this Redis lacks a command it needs
          other/postgresql/V9__x.sql: not this domain's
    """)
    write(tmp_path / "shop/domain.yaml", "technologies: {postgresql: {}, elasticsearch: {}}\n")
    write(tmp_path / "shop/postgresql/V1__a.sql", "select 1;")
    write(tmp_path / "shop/elasticsearch/1-a.json", "{}")
    p = load_project(tmp_path)
    assert p.ok, p.problems
    staging = p.environments["staging"]
    assert skipped(p, p.domains["shop"], staging) == [
        "elasticsearch: staging does not serve elasticsearch: no OpenSearch on this machine (technologies: "
        "postgresql, redis in environments/staging.yaml)"]
    assert left_out_files(staging, "shop") == ["redis/2-b.lua: left out of these specs: this Redis lacks a command it needs"]
