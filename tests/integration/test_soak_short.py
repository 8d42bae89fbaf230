"""The short seeded soak (bench/soak.py, issue 28 item 7) on the four engines: random releases under
kill -9, SIGSTOP past the lease, a cut lock session, a second runner, a broken-then-fixed file and
(on the PostgreSQL, FerretDB and redis-server of the soak's own) the server killed and restarted;
every release completes and ends as the same release run without faults."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow,
              pytest.mark.engine("postgresql", "redis", "mongodb", "opensearch")]

ROOT = Path(__file__).resolve().parents[2]


def load_soak():
    spec = importlib.util.spec_from_file_location("polymigrate_bench_soak", ROOT / "bench" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_a_short_seeded_soak_of_50_faults_applies_nothing_twice_and_loses_nothing():
    soak = load_soak()
    lines: list[str] = []
    started = time.monotonic()
    # PostgreSQL, FerretDB and Redis servers of the soak's own, so the restart fault kills the server
    # under a run (the shared engines are never stopped); OpenSearch is the shared node (one JVM here)
    engines = ["postgresql-private", "redis-private", "mongodb-private", "elasticsearch"]
    tally = soak.soak(seed=28, faults=50, minutes=6, engines=engines, log=lines.append, quick=True)
    text = soak.report(tally, time.monotonic() - started)
    print(text)
    assert tally.double_applies == 0 and tally.lost_writes == 0, text
    assert tally.incomplete == 0 and tally.recoveries == tally.releases, text
    # bounded by time as well: under a loaded machine it may stop early, never with too little done
    assert tally.injected >= 30, text
    assert {k.split(":")[0] for k in tally.faults} == set(engines), text
    # only the edited files needed a person (the fix, and repair where a run asked for it)
    assert tally.human_steps <= 2 * sum(v for k, v in tally.faults.items() if k.endswith(":edit")), text
