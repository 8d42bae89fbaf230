"""Issue 22.2: two targets that resolve to one ledger are refused at plan, naming both, and a rehearsal
estimate or promotion reads only the rows of the environment it claims, on real PostgreSQL ledgers.

Before, development's rows in a database staging also pointed at made production's approval say the
files were "measured in staging" when staging never ran.
"""

from __future__ import annotations

import textwrap

import pytest

from polymigrate.adapters.postgresql.adapter import PostgresAdapter
from polymigrate.commands import load_domain, plan_domain
from polymigrate.commands.gates import promotable, promotion_gate, read_staging_ledgers
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext
from polymigrate.policy import estimate_seconds

pytestmark = pytest.mark.integration


@pytest.fixture
def world(tmp_path, make_pg_database):
    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "development.yaml").write_text("regions: {d1: null}\n")
    (root / "environments" / "staging.yaml").write_text("regions: {s1: null, s2: null}\n")
    (root / "environments" / "production.yaml").write_text(textwrap.dedent("""\
        regions: {p1: null}
        policy: {approvals: {required: 1, roles: [dba]}, promotion_from: staging}
        """))
    (root / "shop" / "postgresql").mkdir(parents=True)
    (root / "shop" / "domain.yaml").write_text("technologies: {postgresql: {}}\n")
    (root / "shop" / "postgresql" / "V1__customers.sql").write_text("CREATE TABLE customers (id bigint PRIMARY KEY);\n")
    urls = {name: make_pg_database(f"pm_shared_{name}") for name in ("d1", "s1", "s2", "p1")}

    class World:
        url = urls
        where = dict(urls)  # region -> the database its connection names (a test points two at one)

        def load(self):
            return load_domain(root, "shop")

        def connect(self, region: str, technology: str):
            return PostgresAdapter(self.where[region], domain="shop")

        def run(self, environment: str, region: str) -> None:
            _, _, catalog = self.load()
            adapter = self.connect(region, "postgresql")
            try:
                migrate(adapter, catalog.applicable("postgresql"), RunContext("shop", environment, region))
            finally:
                adapter.close()

        def plan(self, environment: str):
            project, domain, catalog = self.load()
            return plan_domain(project, domain, catalog, project.environments[environment], self.connect)

    return World()


def test_two_regions_whose_connections_name_one_database_are_refused_naming_both(world):
    world.where["s2"] = world.url["s1"] + "?connect_timeout=7"  # written differently, the same database
    problems = world.plan("staging").problems
    assert len(problems) == 1, problems
    assert problems[0].startswith("s2/postgresql: staging/s1 and staging/s2 resolve to the same ledger (")
    assert "'polymigrate_postgresql_staging_s1' and 'polymigrate_postgresql_staging_s2'" in problems[0]


def test_a_ledger_another_environment_wrote_is_refused_at_plan_naming_it(world):
    world.where["d1"] = world.url["s1"]  # development's connection points at staging's database
    world.run("development", "d1")
    problems = world.plan("staging").problems
    assert len(problems) == 1, problems  # s1 only: s2 has its own database
    assert problems[0].startswith("s1/postgresql: the ledger at postgresql://") and "is shared: staging/s1 reads rows " \
        "that development/d1 wrote" in problems[0]
    assert world.plan("development").problems == []  # development's own rows are its own


def test_staging_rows_of_another_environment_neither_estimate_nor_promote(world):
    for region in ("s1", "s2"):  # development ran in staging's databases (the FerretDB demo's shared database)
        world.run("development", region)
    project, domain, _ = world.load()
    read = read_staging_ledgers(project, domain, project.environments["staging"], world.connect)
    assert read.ledgers == {("s1", "postgresql"): [], ("s2", "postgresql"): []}
    pending = promotable(world.plan("production"))
    assert estimate_seconds(pending, read.ledgers) == (None, ["V1__customers.sql"])
    missing = promotion_gate(world.plan("production"), project, domain, project.environments["production"], world.connect)
    assert len(missing) == 1 and missing[0].startswith("postgresql 1 V1__customers.sql") and "s1, s2" in missing[0]

    assert len(world.plan("staging").problems) == 2  # and staging's own plan refuses both shared ledgers
