"""Plans: what would run, per region and technology, with a stable hash.

A plan is plain JSON. Its hash covers only what decides the outcome (domain, environment, and per
target the versions, scripts and checksums to apply), never timestamps, so the same state always
hashes the same and an approver's hash can be compared with the plan at execution time.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from polymigrate.catalog import Migration
from polymigrate.checksums import sha256
from polymigrate.reconcile import MigrationInfo, State, to_apply, validation_problems


@dataclass
class Step:
    version: str | None
    description: str
    script: str
    checksum: int
    action: str  # apply | reapply (outdated repeatable) | resume (incomplete)
    sha256: str | None = None

    @classmethod
    def from_info(cls, info: MigrationInfo) -> "Step":
        m = info.migration
        assert m is not None
        action = {State.OUTDATED: "reapply", State.INCOMPLETE: "resume"}.get(info.state, "apply")
        return cls(info.version, info.description, info.script, m.checksum, action, m.sha256)


@dataclass
class TargetPlan:
    region: str
    technology: str
    target: str  # connection id or URL without credentials
    current_version: str | None = None
    steps: list[Step] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    error: str | None = None  # the ledger could not be read

    @classmethod
    def from_infos(cls, region: str, technology: str, target: str, infos: list[MigrationInfo],
                   current: str | None, *, out_of_order: bool = False) -> "TargetPlan":
        states: dict[str, int] = {}
        for i in infos:
            states[i.state.value] = states.get(i.state.value, 0) + 1
        return cls(region, technology, target, current, [Step.from_info(i) for i in to_apply(infos)],
                   validation_problems(infos, out_of_order=out_of_order), states)


@dataclass
class Plan:
    domain: str
    environment: str
    targets: list[TargetPlan] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # what the run does not touch, and why (not hashed)
    # "region/technology" -> ledger.fingerprint of the rows planned against (not hashed, not in to_dict)
    ledgers: dict[str, str] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        core = {
            "domain": self.domain,
            "environment": self.environment,
            "targets": sorted(
                [[t.region, t.technology, t.target, [[s.version, s.script, s.checksum, s.action] for s in t.steps]]
                 for t in self.targets]
            ),
        }
        return sha256(json.dumps(core, sort_keys=True, separators=(",", ":")))

    @property
    def pending(self) -> int:
        return sum(len(t.steps) for t in self.targets)

    @property
    def problems(self) -> list[str]:
        return [f"{t.region}/{t.technology}: {p}" for t in self.targets for p in t.problems] + \
               [f"{t.region}/{t.technology}: {t.error}" for t in self.targets if t.error]

    def to_dict(self) -> dict:
        return {"domain": self.domain, "environment": self.environment, "hash": self.hash,
                "pending": self.pending, "targets": [asdict(t) for t in self.targets]}

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        targets = [TargetPlan(**{**t, "steps": [Step(**s) for s in t["steps"]]}) for t in d["targets"]]
        return cls(d["domain"], d["environment"], targets)

    def summary(self) -> dict:
        """Small enough for an XCom: counts and the hash, never the whole plan."""
        return {"hash": self.hash, "pending": self.pending, "problems": len(self.problems),
                **({"skipped": self.skipped} if self.skipped else {}),
                "targets": {f"{t.region}/{t.technology}": len(t.steps) for t in self.targets},
                # where each target is now: the audit matrix shows it even when nothing is pending
                "current": {f"{t.region}/{t.technology}": t.current_version for t in self.targets if not t.error}}


def changeset_hash(domain: str, environment: str, migrations: list[Migration], waivers: list[str] = ()) -> str:
    """Hash of what an approver approves: every file's version and checksum, independent of ledgers."""
    core = {"domain": domain, "environment": environment,
            "files": sorted([m.technology, m.kind.value, m.id, m.sha256] for m in migrations),
            "waivers": sorted(waivers)}
    return sha256(json.dumps(core, sort_keys=True, separators=(",", ":")))
