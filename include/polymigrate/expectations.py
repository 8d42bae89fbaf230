"""Expectation suites of a domain (``<domain>/expectations/*.yaml``), run by the verify step.

A suite is bound to a technology, an object (a table or view) and optionally some regions::

    description: after the full_name backfill every user has one
    technology: postgresql
    object: users                 # in the domain's schema unless qualified (common.countries)
    regions: [western_europe]     # optional: every region
    expectations:
      - expect_column_values_to_not_be_null: {column: full_name}
      - expect_table_row_count_to_be_between: {min_value: 1}

Each expectation is a GX Core (great_expectations) expectation by its snake_case name with its
arguments; PostgreSQL suites run through GX's SQL datasource on the target's own connection. GX is
imported only when a suite runs (it takes seconds to import), never at DAG parse time.

Reading a suite is bounded like every spec file (``spec.reading``); a bad suite is a ``Problem``
naming the file and line.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from polymigrate.errors import Problem

EXPECTATIONS_DIR = "expectations"
SUPPORTED = ("postgresql",)
_NAME = re.compile(r"^expect_[a-z0-9_]+$")


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    technology: Literal["postgresql", "mongodb", "redis", "elasticsearch"]
    object: str = Field(min_length=1, description="table or view (schema-qualified, or in the domain's schema)")
    regions: list[str] | None = None
    expectations: list[dict[str, dict[str, Any]]] = Field(min_length=1)

    @field_validator("technology")
    @classmethod
    def _supported(cls, v: str) -> str:
        if v not in SUPPORTED:
            raise ValueError(f"suites for {v} are not run yet: GX runs them through its SQL datasource, so only "
                             f"{', '.join(SUPPORTED)} (docs/verify.md#expectations)")
        return v

    @field_validator("expectations")
    @classmethod
    def _one_each(cls, v: list[dict[str, dict[str, Any]]]) -> list[dict[str, dict[str, Any]]]:
        for i, item in enumerate(v):
            if len(item) != 1:
                raise ValueError(f"item {i + 1} must have exactly one key, the expectation's name "
                                 f"(e.g. expect_column_values_to_not_be_null), got {sorted(item)}")
            name = next(iter(item))
            if not _NAME.match(name):
                raise ValueError(f"item {i + 1}: {name!r} is not an expectation name (expect_… in snake_case)")
        return v


@dataclass(frozen=True)
class Suite:
    name: str      # the file's stem
    path: str
    spec: SuiteSpec

    def applies(self, technology: str, region: str) -> bool:
        return self.spec.technology == technology and (self.spec.regions is None or region in self.spec.regions)


def load_suites(domain_path: str | Path, regions: list[str] | None = None, domain: str | None = None
                ) -> tuple[list[Suite], list[Problem]]:
    """Every suite under ``<domain>/expectations/`` (sorted by name), and the problems of the others.
    ``regions``: the regions a suite may name (a typo is a problem, not a suite that never runs)."""
    from polymigrate.spec.loader import _line_of, _validation_problems
    from polymigrate.spec.reading import read_yaml

    folder = Path(domain_path) / EXPECTATIONS_DIR
    suites: list[Suite] = []
    problems: list[Problem] = []
    if not folder.is_dir():
        return suites, problems
    root = Path(domain_path).parent
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml")):
        data, node, found = read_yaml(path, root, domain)
        if found:
            problems += found
            continue
        try:
            spec = SuiteSpec.model_validate(data if data is not None else {})
        except ValidationError as exc:
            problems += _validation_problems(exc, str(path), node, domain)
            continue
        unknown = sorted(set(spec.regions or []) - set(regions)) if regions is not None else []
        if unknown:
            problems.append(Problem(str(path), f"regions {unknown} are not regions of the domain ({sorted(regions)})",
                                    line=_line_of(node, ("regions",)), hint="fix the name or remove it", domain=domain))
            continue
        suites.append(Suite(path.stem, str(path), spec))
    return suites, problems


def class_name(expectation: str) -> str:
    """``expect_column_values_to_not_be_null`` → ``ExpectColumnValuesToNotBeNull`` (GX's class)."""
    return "".join(part.capitalize() for part in expectation.split("_"))


@dataclass(frozen=True)
class Outcome:
    """One expectation's result, as the verify step records it."""

    suite: str
    expectation: str
    ok: bool
    detail: str


def run_sql_suites(suites: list[Suite], sqlalchemy_url: Any, schema: str | None) -> list[Outcome]:
    """Run ``suites`` with GX Core against the database at ``sqlalchemy_url`` (a SQLAlchemy ``URL``;
    its password stays in memory, in an ephemeral GX context that writes nothing to disk)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # machines are offline; GX must not phone home
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # noqa: BLE001  cosmetic: progress bars only clutter the task log
        pass
    source = context.data_sources.add_postgres(name="polymigrate",
                                               connection_string=sqlalchemy_url.render_as_string(hide_password=False))
    out: list[Outcome] = []
    for suite in suites:
        table_schema, _, table = suite.spec.object.rpartition(".")
        asset = source.add_table_asset(name=suite.name, table_name=table, schema_name=table_schema or schema)
        batch = asset.add_batch_definition_whole_table("whole table").get_batch()
        for item in suite.spec.expectations:
            name, args = next(iter(item.items()))
            cls = getattr(gx.expectations, class_name(name), None)
            if cls is None:
                out.append(Outcome(suite.name, name, False, f"{suite.path}: GX has no expectation {name!r} "
                                   "(see the GX expectation gallery for the names)"))
                continue
            try:
                expectation = cls(**(args or {}))
            except Exception as exc:  # noqa: BLE001  pydantic's message names the bad argument
                reason = " ".join(str(exc).split())[:300]
                out.append(Outcome(suite.name, name, False, f"{suite.path}: bad arguments {args}: {reason}"))
                continue
            result = batch.validate(expectation)
            out.append(Outcome(suite.name, name, bool(result.success), _describe(suite, args, result)))
    return out


def _describe(suite: Suite, args: dict[str, Any], result: Any) -> str:
    r = result.result or {}
    what = ", ".join(f"{k}={v}" for k, v in (args or {}).items())
    where = f"{suite.spec.object}" + (f" ({what})" if what else "")
    if r.get("unexpected_count") is not None and r.get("element_count") is not None:
        text = f"{where}: {r['unexpected_count']:,} of {r['element_count']:,} row(s) unexpected"
        sample = r.get("partial_unexpected_list") or []
        if sample and not result.success:
            text += f", e.g. {sample[:5]}"
        return text
    if "observed_value" in r:
        return f"{where}: observed {r['observed_value']}"
    info = (result.exception_info or {}) if hasattr(result, "exception_info") else {}
    if info.get("raised_exception"):
        return f"{where}: {str(info.get('exception_message'))[:300]}"
    return where
