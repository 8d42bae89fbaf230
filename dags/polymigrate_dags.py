"""Every polymigrate DAG: one per (domain, environment) of the spec tree, and a nightly
``drift__<environment>`` per environment.

POLYMIGRATE_SPECS points at another spec tree (default: migration_specs/ beside this folder).
Parsing reads spec YAML only: no database, no connection, no migration file contents.

This file never raises. A broken or hostile domain becomes a DAG of its own whose validate task
names every problem (the loader bounds size, nesting and alias expansion, and refuses links out
of the tree), and the other domains' DAGs load. Should a DAG still fail to build (a bug), it is
logged with its traceback and skipped, never taking the others down with it.
"""

import gc
import logging
import os
from pathlib import Path

from airflow.sdk import get_parsing_context

from polymigrate.blueprint import compile_drift, compile_project
from polymigrate.spec.loader import load_project
from polymigrate_airflow.renderer import render

SPECS = os.environ.get("POLYMIGRATE_SPECS") or str(Path(__file__).resolve().parent.parent / "migration_specs")
log = logging.getLogger("polymigrate.dags")


def build_dags(specs: str, only: str | None = None) -> dict:
    """Every DAG of the spec tree; with ``only`` (a DAG id), that DAG alone when the tree has it."""
    # Issue 24 (P4): building a few thousand operators, each a few dozen long-lived objects, set off
    # Python's cyclic collector again and again, each pass walking everything built so far: about a
    # fifth of the parse's CPU. Nothing built here is garbage; collection resumes right after.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _build(specs, only)
    finally:
        if collecting:
            gc.enable()


def _build(specs: str, only: str | None) -> dict:
    try:
        project = load_project(Path(specs).resolve())
    except Exception:  # noqa: BLE001  the DAG processor must keep every other DAG file working
        log.exception("polymigrate: cannot load the spec tree %s; no polymigrate DAG defined", specs)
        return {}
    # A task process parses this file to run one task of one DAG (Airflow sets the parsing context):
    # compiling and building every other DAG was most of that parse (issue 24: 160-190 ms of CPU per
    # task for the sample tree's 24 DAGs, 1.3 s for 200 DAGs). An id this tree does not have builds
    # everything, so Airflow's own "DAG not found" stays what it would have been.
    blueprints = _compile(specs, project, only) if only else []
    dags = {}
    for bp in blueprints or _compile(specs, project, None):
        try:
            dags[bp.dag_id] = render(bp)
        except Exception:  # noqa: BLE001
            log.exception("polymigrate: DAG %s could not be built; the other DAGs are unaffected", bp.dag_id)
    return dags


def _compile(specs: str, project, only: str | None) -> list:
    try:
        blueprints = compile_project(specs, project, only)
    except Exception:  # noqa: BLE001  the DAG processor must keep every other DAG file working
        log.exception("polymigrate: cannot compile the spec tree %s; no polymigrate DAG defined", specs)
        return []
    try:
        blueprints += compile_drift(specs, project, only)
    except Exception:  # noqa: BLE001  a drift DAG bug must not take the migrate DAGs down
        log.exception("polymigrate: the drift DAGs of %s could not be compiled; the migrate DAGs are unaffected", specs)
    return blueprints


globals().update(build_dags(SPECS, get_parsing_context().dag_id))
