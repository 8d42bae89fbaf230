"""PostgreSQL expectation suites run with GX Core (great_expectations) on the target's own connection.

GX takes seconds to import, so it is imported here only when a suite runs, never at DAG parse time;
the suites themselves are read and validated in ``polymigrate.expectations``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import sys
import types
from typing import Any

from polymigrate.expectations import Outcome, Suite, class_name


@functools.cache
def _gx_levels_ours() -> bool:
    """Whether GX's log levels are ours to set: nobody who deploys it set one on its logger (decided
    at the first suite, before we set any)."""
    return logging.getLogger("great_expectations").level == logging.NOTSET


def _quiet_gx_logs() -> None:
    """GX logs its own workings at INFO: importing it alone wrote 214 "Skipping registering function"
    lines into a verify task's log of 254, burying the checks on-call reads. Its warnings still show.
    Called before GX's import and again after it: some of its modules set their own logger to INFO."""
    if not _gx_levels_ours():
        return
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if name.startswith("great_expectations.") and isinstance(logger, logging.Logger) \
                and logging.NOTSET < logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


class _Deferred(types.ModuleType):
    """A module imported on its first attribute read (``__spec__`` is its own, so the import system
    does not load it just to find it in ``sys.modules``)."""

    def __init__(self, name: str, spec: Any) -> None:
        super().__init__(name)
        self.__spec__ = spec

    def __getattr__(self, attr: str) -> Any:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), attr)


# Imported by GX's expectation modules at their top and used only inside functions: ``scipy.stats``
# by three (KL divergence, the KS tests), a third of GX's import (1.1 of 3.4 s of CPU); ``altair`` by
# the KL one's renderer (0.35 s). Every verify task that runs a suite paid for both.
DEFERRED = ("scipy.stats", "altair")


def _defer_heavy_imports() -> None:
    """Each of ``DEFERRED`` loads when an expectation that needs it first runs, not with GX."""
    for name in DEFERRED:
        if name not in sys.modules and (spec := importlib.util.find_spec(name)) is not None:
            sys.modules[name] = _Deferred(name, spec)


def import_gx():
    """GX, imported quietly without ``DEFERRED`` (a task's first call pays for it; a preloaded
    process, ``polymigrate_airflow.preload``, has it already)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # machines are offline; GX must not phone home
    _quiet_gx_logs()
    _defer_heavy_imports()
    import great_expectations as gx

    _quiet_gx_logs()
    return gx


def run_sql_suites(suites: list[Suite], sqlalchemy_url: Any, schema: str | None) -> list[Outcome]:
    """Run ``suites`` with GX Core against the database at ``sqlalchemy_url`` (a SQLAlchemy ``URL``;
    its password stays in memory, in an ephemeral GX context that writes nothing to disk)."""
    gx = import_gx()

    context = gx.get_context(mode="ephemeral")
    try:
        context.variables.progress_bars = {"globally": False, "metric_calculations": False}
    except Exception:  # noqa: BLE001  cosmetic: progress bars only clutter the task log
        pass
    connection = sqlalchemy_url.render_as_string(hide_password=False)
    if sqlalchemy_url.host:
        source = context.data_sources.add_postgres(name="polymigrate", connection_string=connection)
    else:  # a Unix socket (``?host=/dir``): GX's PostgresDsn refuses a URL without a host; its plain SQL source takes it
        import warnings

        with warnings.catch_warnings():  # its advice to use the PostgreSQL source, which cannot take this URL
            warnings.filterwarnings("ignore", message="You are using a generic SQLDatasource")
            source = context.data_sources.add_sql(name="polymigrate", connection_string=connection)
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
