"""Release phases (docs/phases.md): expand, migrate, contract; which files a phase's run applies,
and the order versions must keep across phases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from polymigrate.catalog.naming import Kind
from polymigrate.errors import Problem
from polymigrate.spec.models import PHASES

if TYPE_CHECKING:
    from polymigrate.catalog import DomainCatalog, Migration


def phase_counts(catalog: "DomainCatalog", technologies: list[str]) -> dict[str, dict[str, int]]:
    """``{phase: {technology: files}}`` in release order, or ``{}`` when no file declares a phase."""
    if not catalog.phased:
        return {}
    out: dict[str, dict[str, int]] = {}
    for ph in PHASES:
        for tech in technologies:
            n = sum(1 for m in catalog.applicable(tech) if m.phase == ph)
            if n:
                out.setdefault(ph, {})[tech] = n
    return out


def phases_line(phases: dict[str, dict[str, int]], soak_minutes: float = 0, contract_approval: bool = False) -> str:
    """``expand (postgresql 1, redis 1) → migrate (…) → contract (…)``, for logs and the approval summary."""
    text = " → ".join(f"{ph} ({', '.join(f'{t} {n}' for t, n in techs.items())})" for ph, techs in phases.items())
    if "contract" in phases:
        text += "; contract runs only after the earlier phases verified in the region" + \
            (f", then {soak_minutes:g} min of soak" if soak_minutes else "") + \
            (", and a separate approval of the contract phase there" if contract_approval else "")
    return text


def in_phase(migration: Migration | None, phase: str | None) -> bool:
    """Whether a run of ``phase`` applies ``migration``: its phase or an earlier one (an earlier phase's
    file still pending, e.g. a resumed backfill, runs first); every file when ``phase`` is None."""
    if phase is None or migration is None:
        return True
    return PHASES.index(migration.phase) <= PHASES.index(phase)


def phase_order_problems(migrations: list[Migration], domain: str) -> list[Problem]:
    """Within one technology, versions must not go back to an earlier phase: a phase-major run applies
    every expand file before any migrate file, so V3 (expand) after V2 (migrate) would run out of order."""
    out: list[Problem] = []
    versioned = [m for m in migrations if m.kind is Kind.VERSIONED]
    if not any(m.declares_phase for m in migrations):
        return out
    highest: Migration | None = None
    for m in versioned:
        if highest is not None and PHASES.index(m.phase) < PHASES.index(highest.phase):
            out.append(Problem(str(m.path), f"version {m.version} is in phase {m.phase} but comes after version "
                               f"{highest.version} ({highest.script}) in phase {highest.phase}", domain=domain,
                               hint=f"give it a version below {highest.version}, or declare phase={highest.phase} "
                                    "(docs/phases.md: within a technology, phases follow version order)"))
        elif highest is None or PHASES.index(m.phase) > PHASES.index(highest.phase):
            highest = m
    return out


def _phase_line(m: Migration) -> int | None:
    """The line that declares the file's phase (a header directive or a JSON key), if spelled plainly."""
    for i, line in enumerate(m.text.splitlines()[:200], 1):
        if "phase" in line:
            return i
    return None


def undeclared_phase_problems(catalog: "DomainCatalog", domain) -> list[Problem]:
    """Files whose phase the domain spec does not declare (``technologies.<t>.phases``).

    The DAG's tasks follow the declared phases, not the files (parse reads no migration file, issue
    24), so a file in an undeclared phase would have no task of its phase: a contract file would run
    in no contract task, after no ``verify_before_contract``. Validate refuses it instead, naming the
    file and the line of the spec to change. ``domain`` is the ``spec.Domain``."""
    declared = domain.declared_phases()
    spec = f"{domain.path}/domain.yaml" if domain.path else "domain.yaml"
    out: list[Problem] = []
    for tech, migrations in catalog.migrations.items():
        files = [m for m in migrations if m.kind is not Kind.UNDO]
        if declared is None:
            used = [p for p in PHASES if any(m.declares_phase and m.phase == p for m in files)]
            if not used:
                continue
            want = [p for p in PHASES if p in used or (p == "expand" and any(not m.declares_phase for m in files))]
            for m in files:
                if m.declares_phase:
                    out.append(Problem(str(m.path), f"declares phase {m.phase}, but {spec} declares no release phases",
                                       line=_phase_line(m), domain=catalog.domain,
                                       hint=f"declare them in {spec} under technologies.{tech}: phases: "
                                            f"[{', '.join(want)}] (the DAG's tasks follow the declared phases, "
                                            "docs/phases.md), or remove the file's phase"))
            continue
        allowed = declared.get(tech) or ["expand"]
        for m in files:
            if m.phase in allowed:
                continue
            what = f"declares phase {m.phase}" if m.declares_phase else "declares no phase (so expand)"
            listed = (f"technologies.{tech}.phases lists {', '.join(allowed)}"
                      if domain.technologies[tech].phases else f"technologies.{tech} declares no phases (so expand only)")
            want = [p for p in PHASES if p in allowed or p == m.phase]
            out.append(Problem(str(m.path), f"{what}, which {spec} does not declare: {listed}",
                               line=_phase_line(m) if m.declares_phase else None, domain=catalog.domain,
                               hint=f"set technologies.{tech}.phases: [{', '.join(want)}] in {spec} (the DAG has a "
                                    "task only for declared phases, docs/phases.md), or change the file's phase"))
    return out
