"""deploy/statsd-exporter/mapping.yml and deploy/grafana/polymigrate.json cover exactly the metrics the
code sends: each one mapped and on the dashboard, nothing mapped or charted that is never sent."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import yaml

from polymigrate import metrics

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "deploy" / "statsd-exporter" / "mapping.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "polymigrate.json"


def assets():
    spec = importlib.util.spec_from_file_location("observability_assets", ROOT / "scripts" / "observability_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sent_names() -> set[str]:
    """Every metric name the code can send: the literals of polymigrate.metrics and of the Airflow
    layer that emits them (a name used there but missing from METRICS would fail at run time)."""
    found = set()
    for path in (ROOT / "include/polymigrate/metrics.py", ROOT / "plugins/polymigrate_airflow/observability.py"):
        found |= set(re.findall(r"[\"'](polymigrate\.[a-z_]+\.[a-z_.]+)[\"']", path.read_text(encoding="utf-8")))
    return found


def test_the_code_sends_exactly_the_listed_metrics():
    assert sent_names() == set(metrics.METRICS)


def test_every_metric_is_mapped_and_every_mapping_is_a_metric():
    mappings = yaml.safe_load(MAPPING.read_text(encoding="utf-8"))["mappings"]
    matched = {m["match"].removeprefix("airflow.") for m in mappings}
    assert matched == set(metrics.METRICS)
    for m in mappings:
        name = m["match"].removeprefix("airflow.")
        kind = metrics.METRICS[name][0]
        suffix = {"timer": "_seconds", "counter": "_total", "gauge": ""}[kind]
        assert m["name"] == "airflow_" + name.replace(".", "_") + suffix, m
        assert (m.get("observer_type") == "histogram") == (kind == "timer"), m


def test_the_dashboard_charts_every_metric_and_only_those():
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    used = set()
    for expr in exprs:
        for series in re.findall(r"\b(airflow_polymigrate_[a-z_]+)", expr):
            base = re.sub(r"(_seconds_bucket|_seconds_sum|_seconds_count|_seconds|_total)$", "", series)
            used.add(base.removeprefix("airflow_"))
    by_prometheus = {name.replace(".", "_"): name for name in metrics.METRICS}
    assert used <= set(by_prometheus), used - set(by_prometheus)
    assert {by_prometheus[u] for u in used} == set(metrics.METRICS)
    # a label a query filters or groups on exists on that metric (Prometheus would just return nothing)
    for expr in exprs:
        for series, labels in re.findall(r"(airflow_polymigrate_[a-z_]+)\{([^}]*)\}", expr):
            name = by_prometheus[re.sub(r"(_seconds_bucket|_seconds|_total)$", "", series).removeprefix("airflow_")]
            for label in re.findall(r"(\w+)=~?\"", labels):
                assert label in metrics.METRICS[name][2], (name, label)


def test_the_files_are_what_the_generator_writes():
    for path, text in assets().rendered().items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is stale: run scripts/observability_assets.py"
