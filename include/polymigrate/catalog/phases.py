"""Release phases (docs/phases.md): expand, migrate, contract; which files a phase's run applies,
and the order versions must keep across phases."""

from __future__ import annotations

from typing import TYPE_CHECKING

from polymigrate.catalog.naming import Kind
from polymigrate.errors import Problem

if TYPE_CHECKING:
    from polymigrate.catalog import DomainCatalog, Migration

PHASES = ("expand", "migrate", "contract")


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
