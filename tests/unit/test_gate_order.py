"""The order of a target's gates (``commands.gates.before_target``, issue 25 item 2): the change set's
approval, the contract's approval, the contract soak, the window; refusals before waits. Each test
sets up a later gate that would fail differently, so a gate asked out of order shows.

Without servers: no window is configured here, so no gate opens a target (the window's place in the
order, and the operator and the CLI compared, are tests/integration/test_gates_decided_once.py).
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from polymigrate.commands import Connector, Grant, RunParams, Who, open_run
from polymigrate.commands.gates import CommandLineApprovals, before_target
from polymigrate.errors import PermanentError, PolicyRefused

NOW = datetime(2026, 11, 9, 10, 0, tzinfo=timezone.utc)


class NoTargets(Connector):
    def open(self, environment, region, technology, domain):
        raise AssertionError(f"{region}/{technology} opened: no gate here may touch a target")

    def how_to_configure(self, conn_id: str) -> str:
        return "n/a"


class Asked:
    """Approvals that say which gate was asked, refusing at ``refuse``."""

    def __init__(self, refuse: str | None = None):
        self.refuse, self.asked = refuse, []

    def change_set(self, run) -> Grant:
        self.asked.append("change set")
        if self.refuse == "change set":
            raise PolicyRefused("no valid approval on record")
        return Grant(run.changeset_hash())

    def contract(self, run, region: str) -> None:
        self.asked.append("contract")
        if self.refuse == "contract":
            raise PolicyRefused(f"{region}: no valid approval of the contract phase on record")


@pytest.fixture
def run(tmp_path: Path):
    root = tmp_path / "specs"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "production.yaml").write_text(textwrap.dedent("""\
        regions: {p1: null}
        policy: {approvals: {required: 0}, contract_soak_minutes: 30, contract_approval: true}
        """))
    (root / "shop" / "postgresql").mkdir(parents=True)
    (root / "shop" / "domain.yaml").write_text("technologies:\n  postgresql: {phases: [expand, contract]}\n")
    (root / "shop" / "postgresql" / "V1__add.sql").write_text("-- polymigrate: phase=expand\nCREATE TABLE t (a int);\n")
    (root / "shop" / "postgresql" / "V2__drop.sql").write_text("-- polymigrate: phase=contract\nDROP TABLE t;\n")

    def make(params: RunParams | None = None):
        return open_run(root, "shop", "production", params=params or RunParams(), who=Who("ann@cli", "ann", "cli-1"),
                        connector=NoTargets(), audit=None, clock=lambda: NOW)
    return make


def test_a_refused_change_set_is_refused_before_the_contract_is_asked_or_its_soak_read(run):
    asked = Asked(refuse="change set")
    with pytest.raises(PolicyRefused, match="no valid approval on record"):
        before_target(run(), "p1", "postgresql", asked, phase="contract", verified_at=None)
    assert asked.asked == ["change set"]


def test_a_refused_contract_is_refused_before_its_soak_is_read(run):
    asked = Asked(refuse="contract")
    # the soak would refuse otherwise: no verify on record (verified_at None)
    with pytest.raises(PolicyRefused, match="p1: no valid approval of the contract phase"):
        before_target(run(), "p1", "postgresql", asked, phase="contract", verified_at=None)
    assert asked.asked == ["change set", "contract"]


def test_past_both_approvals_the_soak_decides_and_refuses_only_without_a_verify(run):
    asked = Asked()
    with pytest.raises(PermanentError, match="needs the earlier phases verified first"):
        before_target(run(), "p1", "postgresql", asked, phase="contract", verified_at=None)
    verdict = before_target(run(), "p1", "postgresql", Asked(), phase="contract",
                            verified_at=NOW - timedelta(minutes=10))
    assert verdict.until == NOW + timedelta(minutes=20)
    assert [w.gate for w in verdict.waits] == ["soak"]
    assert verdict.message.startswith("p1: expand and migrate are applied and verified; the contract phase waits 30 min")
    assert before_target(run(), "p1", "postgresql", Asked(), phase="contract",
                         verified_at=NOW - timedelta(minutes=31)).until is None


def test_an_earlier_phase_asks_only_the_change_set_s_approval(run):
    asked = Asked()
    verdict = before_target(run(), "p1", "postgresql", asked, phase="expand")
    assert asked.asked == ["change set"] and verdict.until is None and verdict.grant.changeset_hash


def test_the_command_line_decides_a_region_s_contract_once_and_its_grant_is_the_one_it_started_with(run):
    r = run(RunParams(override=True, override_reason="INC-4711 disk full, drop now"))
    emitted = []
    r.emit = lambda kind, **kw: emitted.append((kind, kw.get("details", {}).get("gate")))
    approvals = CommandLineApprovals(Grant("h", ("ann",), True, "break_glass"))
    for _ in range(2):  # two technologies of the region
        verdict = before_target(r, "p1", "postgresql", approvals, phase="contract", verified_at=NOW - timedelta(hours=1))
        assert verdict.grant.changeset_hash == "h"
    assert emitted == [("overridden", "contract")]
    with pytest.raises(PolicyRefused, match="which the command line cannot collect"):
        before_target(run(), "p1", "postgresql", CommandLineApprovals(Grant("h")), phase="contract",
                      verified_at=NOW - timedelta(hours=1))
