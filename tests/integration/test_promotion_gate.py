"""The promotion gate on real PostgreSQL ledgers: production runs only what every staging region ran.

Two staging regions and one production region, each its own database; staging is migrated through
the executor, so its ledgers hold exactly what a rehearsal leaves behind.
"""

from __future__ import annotations

import textwrap

import pytest

from polymigrate.adapters.postgresql.adapter import PostgresAdapter
from polymigrate.commands import load_domain, plan_domain
from polymigrate.errors import PermanentError
from polymigrate.executor import migrate
from polymigrate.commands.gates import promotable, promotion_gate, read_staging_ledgers
from polymigrate.ledger import RunContext
from polymigrate.policy import estimate_seconds

pytestmark = pytest.mark.integration

V1 = "CREATE TABLE customers (id bigint PRIMARY KEY);\nSELECT pg_sleep(0.3);\n"
V2 = "ALTER TABLE customers ADD COLUMN email text;\n"


@pytest.fixture
def world(tmp_path, make_pg_database):
    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "staging.yaml").write_text("regions:\n  s1: null\n  s2: null\n")
    (root / "environments" / "production.yaml").write_text(textwrap.dedent("""\
        regions:
          p1: null
        policy:
          approvals: {required: 2, roles: [dba]}
          promotion_from: staging
        """))
    (root / "shop" / "postgresql").mkdir(parents=True)
    (root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql: {}\n")
    (root / "shop" / "postgresql" / "V1__customers.sql").write_text(V1)
    (root / "shop" / "postgresql" / "V2__email.sql").write_text(V2)
    urls = {name: make_pg_database(f"pm_promo_{name}") for name in ("s1", "s2", "p1")}

    class World:
        specs = root
        url = urls

        def load(self):
            project, domain, catalog = load_domain(root, "shop")
            return project, domain, catalog

        def adapter(self, region: str) -> PostgresAdapter:
            return PostgresAdapter(urls[region], domain="shop")

        def rehearse(self, region: str, target: str | None = None) -> None:
            _, _, catalog = self.load()
            adapter = self.adapter(region)
            try:
                migrate(adapter, catalog.applicable("postgresql"), RunContext("shop", "staging", region), target_version=target)
            finally:
                adapter.close()

        def connect(self, broken: set[str] = frozenset()):
            def connect(region: str, technology: str):
                if region in broken:
                    raise PermanentError(f"Airflow connection 'polymigrate_postgresql_staging_{region}' is not defined")
                return self.adapter(region)
            return connect

        def production_plan(self):
            project, domain, catalog = self.load()
            return plan_domain(project, domain, catalog, project.environments["production"], self.connect())

        def gate(self, broken: set[str] = frozenset()) -> list[str]:
            project, domain, _ = self.load()
            return promotion_gate(self.production_plan(), project, domain, project.environments["production"],
                                  self.connect(broken))

    return World()


def test_refuses_what_one_staging_region_has_not_run_and_passes_once_it_has(world):
    world.rehearse("s1")
    world.rehearse("s2", target="1")
    missing = world.gate()
    assert len(missing) == 1
    assert missing[0].startswith("postgresql 2 V2__email.sql (checksum ") and missing[0].endswith("staging region(s) s2")

    world.rehearse("s2")
    assert world.gate() == []


def test_nothing_rehearsed_lists_every_pending_migration(world):
    missing = world.gate()
    assert [m.split(" (checksum")[0] for m in missing] == ["postgresql 1 V1__customers.sql", "postgresql 2 V2__email.sql"]
    assert all("s1, s2" in m for m in missing)


def test_a_file_edited_after_the_rehearsal_is_refused_by_checksum(world):
    world.rehearse("s1")
    world.rehearse("s2")
    (world.specs / "shop" / "postgresql" / "V2__email.sql").write_text(V2.replace("email text", "email varchar(320)"))
    missing = world.gate()
    assert len(missing) == 1 and "V2__email.sql" in missing[0] and "s1, s2" in missing[0]


def test_an_unreadable_staging_region_is_refused_by_name_not_assumed(world):
    world.rehearse("s1")
    world.rehearse("s2")
    missing = world.gate(broken={"s2"})
    assert missing == ["postgresql in staging region s2: ledger not readable (Airflow connection "
                       "'polymigrate_postgresql_staging_s2' is not defined)"]


def test_production_already_up_to_date_passes_without_reading_staging(world):
    world.rehearse("s1")
    world.rehearse("s2")
    project, domain, catalog = world.load()
    adapter = world.adapter("p1")
    migrate(adapter, catalog.applicable("postgresql"), RunContext("shop", "production", "p1"))
    adapter.close()
    assert world.gate(broken={"s1", "s2"}) == []  # nothing pending: no staging read needed


def test_rehearsal_ledgers_give_the_estimate_a_window_is_checked_against(world):
    world.rehearse("s1")
    world.rehearse("s2", target="1")
    project, domain, _ = world.load()
    read = read_staging_ledgers(project, domain, project.environments["staging"], world.connect())
    seconds, unknown = estimate_seconds(promotable(world.production_plan()), read.ledgers)
    assert seconds is not None and seconds >= 0.3  # V1 sleeps 0.3 s in both regions
    assert unknown == []  # V2 ran in s1
