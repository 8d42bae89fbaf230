"""A sample domain's MongoDB files on a test's own database, for the tests that run them (the samples'
own test and the schema-diff test that builds the declaration from them), so neither test module
imports the other.
"""

from __future__ import annotations

import pymongo

from polymigrate.adapters.mongodb.adapter import MongoAdapter
from polymigrate.commands import validate_project
from polymigrate.errors import PermanentError
from polymigrate.executor import placeholders_for
from polymigrate.ledger import RunContext
from polymigrate.spec import TechnologyConfig
from tests.conftest import SPECS


def sample_on(domain: str, url: str):
    """(the domain's applicable MongoDB migrations, an adapter on ``url``, a run context, the database)."""
    v = validate_project(SPECS, [domain])
    assert not v.problems, v.problems
    d = v.project.domains[domain]
    cfg = d.technologies["mongodb"]
    db = pymongo.MongoClient(url).get_default_database()
    # the domain's settings, on this test's own database
    settings = TechnologyConfig(database=db.name, batch_size=7, pause_ms=cfg.pause_ms)
    adapter = MongoAdapter.from_url(url, domain=domain, settings=settings)
    ctx = RunContext(domain=domain, environment="testing", region="western_europe", actor="tester", run_id="run-1")
    return v.catalogs[domain].applicable("mongodb"), adapter, ctx, db


def runnable(adapter, migrations, ctx, server):
    """Each file the server can run; the others with the refusal the adapter gives before running them."""
    ok, refused = [], {}
    for m in migrations:
        try:
            adapter.preflight([(m, m.render(placeholders_for(ctx)))])
            ok.append(m)
        except PermanentError as exc:
            refused[m.script] = str(exc)
    return ok, refused
