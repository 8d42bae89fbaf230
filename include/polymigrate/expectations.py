"""Expectation suites of a domain (``<domain>/expectations/*.yaml``), run by the verify step.

A suite is bound to a technology, an object (a table or view) and optionally some regions::

    description: after the full_name backfill every user has one
    technology: postgresql
    object: users                 # in the domain's schema unless qualified (common.countries)
    regions: [western_europe]     # optional: every region
    phases: [migrate, contract]   # optional: at every verify (see ``SuiteSpec.phases``)
    expectations:
      - expect_column_values_to_not_be_null: {column: full_name}
      - expect_table_row_count_to_be_between: {min_value: 1}

Each expectation is a GX Core (great_expectations) expectation by its snake_case name with its
arguments; PostgreSQL suites run through GX's SQL datasource on the target's own connection
(``expectations_gx``). GX is imported only when a suite runs (it takes seconds to import), never at
DAG parse time. MongoDB and Elasticsearch / OpenSearch suites (object: a collection; an index or
alias) run a documented subset of the same expectations as server-side counts through the adapter's
client (``DOCUMENT_EXPECTATIONS``, ``run_document_suites``); an expectation outside it fails
``validate``.

Reading a suite is bounded like every spec file (``spec.reading``); a bad suite is a ``Problem``
naming the file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from polymigrate.errors import Problem

EXPECTATIONS_DIR = "expectations"
SUPPORTED = ("postgresql", "mongodb", "elasticsearch")
_NAME = re.compile(r"^expect_[a-z0-9_]+$")


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    technology: Literal["postgresql", "mongodb", "redis", "elasticsearch"]
    object: str = Field(min_length=1, description="table or view (schema-qualified, or in the domain's schema); "
                                                  "MongoDB collection; Elasticsearch index or alias")
    regions: list[str] | None = None
    # A check that holds only once a release reached a phase (a column the backfill fills, one the
    # contract drops) would fail every verify before it: bound, it runs only on targets whose newest
    # applied file is of one of these phases (unphased files are expand). Unbound: at every verify.
    phases: list[Literal["expand", "migrate", "contract"]] | None = Field(None, min_length=1)
    expectations: list[dict[str, dict[str, Any]]] = Field(min_length=1)

    @field_validator("technology")
    @classmethod
    def _supported(cls, v: str) -> str:
        if v not in SUPPORTED:
            raise ValueError(f"suites for {v} are not run: only {', '.join(SUPPORTED)} have expectations "
                             "(docs/verify.md#expectations)")
        return v

    @field_validator("expectations")
    @classmethod
    def _one_each(cls, v: list[dict[str, dict[str, Any]]], info: ValidationInfo) -> list[dict[str, dict[str, Any]]]:
        for i, item in enumerate(v):
            if len(item) != 1:
                raise ValueError(f"item {i + 1} must have exactly one key, the expectation's name "
                                 f"(e.g. expect_column_values_to_not_be_null), got {sorted(item)}")
            name = next(iter(item))
            if not _NAME.match(name):
                raise ValueError(f"item {i + 1}: {name!r} is not an expectation name (expect_… in snake_case)")
            tech = info.data.get("technology")
            if tech in DOCUMENT_TECHNOLOGIES:  # a fixed subset there: say so at validate, not at verify
                problem = document_expectation_problem(name, item[name], tech)
                if problem:
                    raise ValueError(f"item {i + 1}: {problem}")
        return v


@dataclass(frozen=True)
class Suite:
    name: str      # the file's stem
    path: str
    spec: SuiteSpec

    def applies(self, technology: str, region: str) -> bool:
        return self.spec.technology == technology and (self.spec.regions is None or region in self.spec.regions)

    def runs_at(self, reached: str | None) -> bool:
        """Whether the suite runs on a target whose release reached ``reached`` (``reached_phase``)."""
        return self.spec.phases is None or reached in self.spec.phases


def reached_phase(infos: list[Any]) -> str | None:
    """The phase of the newest versioned file applied on a target (``reconcile``'s infos); None when
    none is."""
    from polymigrate.versions import Version

    done = [i for i in infos if i.version and i.migration is not None and i.state.applied and not i.state.failed]
    return max(done, key=lambda i: Version(i.version)).migration.phase if done else None


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


# --- MongoDB and Elasticsearch / OpenSearch: a documented subset, as server-side counts -------------
#
# GX Core validates SQL tables and dataframes; pulling a collection or an index into a dataframe is
# neither bounded nor what an operator wants at 3 a.m. These technologies run the expectations below
# as counts the server computes (``count_documents`` / ``_count``, one aggregation for uniqueness):
# no document leaves the server except up to ``EXAMPLES`` unexpected values for the detail. Results
# are recorded like GX's: "k of n document(s) unexpected", ``mostly`` as in GX.

DOCUMENT_TECHNOLOGIES = ("mongodb", "elasticsearch")
EXAMPLES = 5            # unexpected values quoted in a check's detail
UNIQUE_TERMS = 10_000   # duplicated values counted by a uniqueness check (its bound)

# name → (required arguments, optional arguments); ``mostly`` is allowed on every column expectation
DOCUMENT_EXPECTATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "expect_table_row_count_to_be_between": ((), ("min_value", "max_value")),
    "expect_table_row_count_to_equal": (("value",), ()),
    "expect_table_row_count_to_equal_other_table": (("other_table_name",), ()),
    "expect_column_to_exist": (("column",), ()),
    "expect_column_values_to_not_be_null": (("column",), ("mostly",)),
    "expect_column_values_to_be_in_set": (("column", "value_set"), ("mostly",)),
    "expect_column_values_to_be_between": (("column",), ("min_value", "max_value", "mostly")),
    "expect_column_values_to_be_unique": (("column",), ("mostly",)),
}


def document_expectation_problem(name: str, args: dict[str, Any] | None, technology: str) -> str | None:
    """Why ``name(**args)`` cannot run on a document store (None: it can)."""
    if name not in DOCUMENT_EXPECTATIONS:
        return (f"{name} is not run on {technology}: supported there are "
                f"{', '.join(DOCUMENT_EXPECTATIONS)} (docs/verify.md#mongodb-and-elasticsearch)")
    required, optional = DOCUMENT_EXPECTATIONS[name]
    given = set(args or {})
    missing = [a for a in required if a not in given]
    unknown = sorted(given - set(required) - set(optional))
    if missing or unknown:
        return f"{name}: " + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                       + ([f"unknown argument(s) {', '.join(unknown)}"] if unknown else []))
    if name == "expect_column_values_to_be_in_set" and not isinstance(args["value_set"], list):
        return f"{name}: value_set must be a list"
    return None


class MongoProbe:
    """Counts on one MongoDB database (a ``pymongo`` Database)."""

    def __init__(self, db: Any):
        self.db = db

    def count(self, obj: str, cond: tuple | None = None) -> int:
        return int(self.db[obj].count_documents(self._filter(cond)))

    def examples(self, obj: str, cond: tuple, field: str) -> list[Any]:
        return [_dig(d, field) for d in self.db[obj].find(self._filter(cond), {field: 1, "_id": 0}).limit(EXAMPLES)]

    def duplicates(self, obj: str, field: str) -> tuple[int, int, list[Any]]:
        """(documents holding a duplicated value, how many values, some of them)."""
        # the duplicated values themselves come back (bounded like Elasticsearch's), summed here:
        # FerretDB 1.24 sums a field of an earlier $group's output as 0 in a second $group
        groups = list(self.db[obj].aggregate([
            {"$match": {field: {"$ne": None}}}, {"$group": {"_id": f"${field}", "n": {"$sum": 1}}},
            {"$match": {"n": {"$gt": 1}}}, {"$limit": UNIQUE_TERMS}]))
        return sum(int(g["n"]) for g in groups), len(groups), [g["_id"] for g in groups[:EXAMPLES]]

    @staticmethod
    def _filter(cond: tuple | None) -> dict[str, Any]:
        if cond is None:
            return {}
        kind, field, *rest = cond
        present = {field: {"$ne": None}}
        if kind == "missing":  # {field: null} matches a null and an absent field alike
            return {field: None}
        if kind == "exists":
            return {field: {"$exists": True}}
        if kind == "present":
            return present
        if kind == "not_in":
            return {"$and": [present, {field: {"$nin": list(rest[0])}}]}
        if kind == "outside":
            low, high = rest
            outside = ([{field: {"$lt": low}}] if low is not None else []) + \
                      ([{field: {"$gt": high}}] if high is not None else [])
            return {"$and": [present, {"$or": outside}]} if outside else {"_id": {"$exists": False}}
        raise ValueError(kind)


class SearchProbe:
    """Counts on Elasticsearch / OpenSearch (a ``SearchApi``); ``obj`` is an index or alias."""

    def __init__(self, api: Any):
        self.api = api

    def count(self, obj: str, cond: tuple | None = None) -> int:
        return self.api.count(obj, self._query(cond))

    def examples(self, obj: str, cond: tuple, field: str) -> list[Any]:
        hits = self.api.search(obj, {"size": EXAMPLES, "_source": [field], "query": self._query(cond)})
        return [_dig(h.get("_source") or {}, field) for h in (hits.get("hits") or {}).get("hits") or []]

    def duplicates(self, obj: str, field: str) -> tuple[int, int, list[Any]]:
        # a terms aggregation: exact on one shard; over several, a value is found when some shard
        # has it among its top candidates (shard_size), the bound docs/verify.md states
        body = {"size": 0, "aggs": {"dup": {"terms": {"field": field, "min_doc_count": 2, "size": UNIQUE_TERMS}}}}
        buckets = (self.api.search(obj, body).get("aggregations") or {}).get("dup", {}).get("buckets") or []
        return sum(int(b["doc_count"]) for b in buckets), len(buckets), [b["key"] for b in buckets[:EXAMPLES]]

    @staticmethod
    def _query(cond: tuple | None) -> dict[str, Any] | None:
        if cond is None:
            return None
        kind, field, *rest = cond
        exists = {"exists": {"field": field}}
        if kind == "missing":
            return {"bool": {"must_not": [exists]}}
        if kind in ("exists", "present"):
            return exists
        if kind == "not_in":
            return {"bool": {"filter": [exists], "must_not": [{"terms": {field: list(rest[0])}}]}}
        if kind == "outside":
            low, high = rest
            bounds = {k: v for k, v in (("gte", low), ("lte", high)) if v is not None}
            return {"bool": {"filter": [exists], "must_not": [{"range": {field: bounds}}]}} if bounds else \
                {"bool": {"must_not": [{"match_all": {}}]}}
        raise ValueError(kind)


def _dig(doc: dict[str, Any], field: str) -> Any:
    for part in field.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def run_document_suites(suites: list[Suite], probe: Any) -> list[Outcome]:
    """Run ``suites`` through ``probe`` (``MongoProbe`` / ``SearchProbe``), one outcome per expectation."""
    out: list[Outcome] = []
    for suite in suites:
        for item in suite.spec.expectations:
            name, args = next(iter(item.items()))
            args = args or {}
            problem = document_expectation_problem(name, args, suite.spec.technology)
            if problem:
                out.append(Outcome(suite.name, name, False, f"{suite.path}: {problem}"))
                continue
            ok, detail = _document_check(probe, suite.spec.object, name, args)
            out.append(Outcome(suite.name, name, ok, detail))
    return out


def _document_check(probe: Any, obj: str, name: str, args: dict[str, Any]) -> tuple[bool, str]:
    what = ", ".join(f"{k}={v}" for k, v in args.items())
    where = obj + (f" ({what})" if what else "")
    if name.startswith("expect_table_row_count"):
        n = probe.count(obj)
        if name == "expect_table_row_count_to_equal_other_table":
            other = probe.count(args["other_table_name"])
            return n == other, f"{where}: {n:,} document(s), {args['other_table_name']} has {other:,}"
        if name == "expect_table_row_count_to_equal":
            return n == args["value"], f"{where}: observed {n:,}"
        low, high = args.get("min_value"), args.get("max_value")
        return (low is None or n >= low) and (high is None or n <= high), f"{where}: observed {n:,}"
    field = args["column"]
    if name == "expect_column_to_exist":
        n = probe.count(obj, ("exists", field))
        return n > 0, f"{where}: " + (f"in {n:,} document(s)" if n else "in no document")
    if name == "expect_column_values_to_be_unique":
        total = probe.count(obj, ("present", field))
        bad, values, some = probe.duplicates(obj, field)
        text = f"{where}: {bad:,} of {total:,} document(s) share a value with another"
        text += f" ({values:,} value(s), e.g. {some})" if bad else ""
        return _mostly(bad, total, args), text
    if name == "expect_column_values_to_not_be_null":
        total, cond = probe.count(obj), ("missing", field)
    elif name == "expect_column_values_to_be_in_set":
        total, cond = probe.count(obj, ("present", field)), ("not_in", field, args["value_set"])
    else:  # expect_column_values_to_be_between
        total, cond = probe.count(obj, ("present", field)), ("outside", field, args.get("min_value"), args.get("max_value"))
    bad = probe.count(obj, cond)
    text = f"{where}: {bad:,} of {total:,} document(s) unexpected"
    ok = _mostly(bad, total, args)
    if bad and not ok:
        text += f", e.g. {probe.examples(obj, cond, field)}"
    return ok, text


def _mostly(bad: int, total: int, args: dict[str, Any]) -> bool:
    mostly = args.get("mostly")
    if mostly is None or total == 0:
        return bad == 0
    return (total - bad) / total >= float(mostly)
