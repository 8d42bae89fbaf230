"""The sample PostgreSQL migrations apply for real, in dependency order, into one database.

This is what the demo and a new domain's first staging run do; it caught psycopg forgetting its
prepared statements in pipeline mode after a DROP (the social-commerce files failed at the view).
"""

from polymigrate.adapters.postgresql.adapter import PostgresAdapter
from polymigrate.commands import validate_project
from polymigrate.executor import migrate
from polymigrate.ledger import RunContext
from polymigrate.spec.loader import dependency_order

from tests.conftest import SPECS


def _migrate_all(url, v, order):
    applied = {}
    for name in order:
        domain = v.project.domains[name]
        if "postgresql" not in domain.technologies:
            continue
        adapter = PostgresAdapter(url, domain=name, settings=domain.technologies["postgresql"])
        try:
            ctx = RunContext(domain=name, environment="testing", region="western_europe", actor="tester",
                             placeholders={"app_role": "app_rw"})
            result = migrate(adapter, v.catalogs[name].applicable("postgresql"), ctx)
            applied[name] = [a["script"] for a in result.applied]
        finally:
            adapter.close()
    return applied


def test_every_sample_domain_applies_in_dependency_order_and_reruns_as_no_op(pg_url):
    v = validate_project(SPECS)
    assert not v.problems, v.problems
    order = dependency_order(v.project)
    assert order.index("common") < order.index("social-commerce")

    first = _migrate_all(pg_url, v, order)
    for name, scripts in first.items():
        expected = [m.script for m in v.catalogs[name].applicable("postgresql")]
        assert scripts == expected, name
    assert _migrate_all(pg_url, v, order) == {name: [] for name in first}
