"""Shared fixtures: real servers (never mocks), started by ``make engines``.

``scripts/engines.sh`` writes where each engine answers to ``.engines/env``; it is read here when
the variables are not already set, so ``pytest tests/…`` run by hand finds the same servers as
``make test``. Set POLYMIGRATE_TEST_PG / POLYMIGRATE_TEST_REDIS (or MONGO_URI, ES_URL…) to use others.

Search engines: ``OPENSEARCH_URL`` (started by ``make engines``) always; ``ES_URL`` (an Elasticsearch
8/9, e.g. docker-compose's) when set — tests using ``search_target`` run once per engine, and the
Elasticsearch run is reported as skipped ("not run") without ES_URL.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "migration_specs"


def _load_engines_env(path: Path = ROOT / ".engines" / "env") -> None:
    """``export NAME="${NAME:-value}"`` lines of scripts/engines.sh; what is set already wins."""
    if not path.exists():
        return
    for line in path.read_text().splitlines():
        m = re.match(r'export (\w+)="(?:\$\{\w+:-(.*)\}|(.*))"$', line.strip())
        if m:
            os.environ.setdefault(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))


_load_engines_env()
PG_ADMIN_URL = os.environ.get("POLYMIGRATE_TEST_PG", "postgresql://postgres@127.0.0.1:54329/postgres")
REDIS_URL = os.environ.get("POLYMIGRATE_TEST_REDIS", "redis://127.0.0.1:63790")
# The DB the tests may flush: one per pytest-xdist worker, so workers never flush each other's keys.
# Modules that run side by side must never share a DB either; those that name their own: test_dag_runs
# 1-3, test_phased_dag 7, test_phased_release_four_engines 11-12, test_samples_reach_production 21-24,
# test_rehearsal_schedule 27, test_cluster 40-53 (targets and brokers); benches 13-14 and 25
# (scripts/engines.sh starts Redis with 64 DBs).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
REDIS_DB = int(os.environ.get("POLYMIGRATE_TEST_REDIS_DB")
               or ((4, 5, 6, 8, 9, 10)[int(_WORKER.removeprefix("gw")) % 6] if _WORKER else 15))
OPENSEARCH_URL = os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9250")
ES_URL = os.environ.get("ES_URL")  # a real Elasticsearch 8/9; nothing here starts one
sys.path.insert(0, str(ROOT))  # tests.conformance


def engine_tool(engine: str, *, env: str | None = None, names: tuple[str, ...] = (), paths: tuple[str, ...] = ()) -> str:
    """Where a tool ``make engines`` installs is: ``env`` (written to .engines/env), else ``names`` on
    PATH, else ``paths``. Missing, the test fails (never skips: a skipped test reads as a pass in CI)
    and says how to install it."""
    import shutil

    candidates = [os.environ.get(env) if env else None, *(shutil.which(n) for n in names), *paths]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    where = f"${env}" if env else ", ".join(names or paths)
    pytest.fail(f"{engine} is not installed here ({where} not found): run `make engines` "
                f"(or `bash scripts/engines.sh up {engine}`), which installs it and writes .engines/env", pytrace=False)


def _pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


@pytest.fixture
def make_pg_database():
    """Factory of fresh, uniquely named databases, dropped after the test."""
    import psycopg
    from psycopg import sql

    created: list[str] = []

    def make(prefix: str = "pm_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            ENGINE_LABELS.setdefault("postgresql", f"PostgreSQL {conn.execute('SHOW server_version').fetchone()[0].split()[0]}"
                                     f" ({PG_ADMIN_URL.split('@')[-1].rsplit('/', 1)[0]})")
        created.append(name)
        return _pg_url(name)

    yield make
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def pg_url(make_pg_database) -> str:
    """A fresh database URL on the real server."""
    return make_pg_database()


@pytest.fixture
def redis_url() -> str:
    """A flushed Redis DB (POLYMIGRATE_TEST_REDIS_DB, default 15) on the real server."""
    import redis

    url = f"{REDIS_URL}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    ENGINE_LABELS.setdefault("redis", f"Redis {client.info('server')['redis_version']} ({REDIS_URL.split('//')[-1]})")
    yield url
    client.flushdb()
    client.close()


class SearchTarget:
    """A shared OpenSearch/Elasticsearch server seen through a name prefix unique to one test.

    Everything a test creates is named ``prefix…`` (``name("products")``), the ledger included, so
    tests of several sessions share the server; ``cleanup`` cancels the test's reindex tasks and
    deletes its indices, templates and pipelines.
    """

    def __init__(self, engine: str, url: str):
        from polymigrate.adapters.elasticsearch.api import SearchApi

        self.engine, self.url = engine, url
        self.api = SearchApi.from_url(url)
        self.prefix = f"pmt-{uuid.uuid4().hex[:8]}-"
        self.ledger = f".polymigrate-{self.prefix}ledger"

    def name(self, suffix: str) -> str:
        return self.prefix + suffix

    @property
    def label(self) -> str:
        return f"{self.api.server.label} ({self.url.split('//')[-1]})"

    def bulk(self, actions) -> int:
        """Index ``{"_index", "_id", "_source"}`` actions with the client's own bulk helper; how many."""
        if self.api.server.flavour == "opensearch":
            from opensearchpy import helpers
        else:
            from elasticsearch import helpers
        ok, _ = helpers.bulk(self.api.client, actions, chunk_size=2000, refresh="wait_for")
        return ok

    def settings(self, **kw):
        from polymigrate.spec import TechnologyConfig
        return TechnologyConfig(ledger=self.ledger, index_prefix=self.prefix, **kw)

    def cleanup(self) -> None:
        from polymigrate.adapters.elasticsearch.api import SearchError

        api, p = self.api, self.prefix
        tasks = api.request("GET", "/_tasks", params={"actions": "*reindex*", "detailed": True})
        for node in (tasks.get("nodes") or {}).values():
            for tid, t in (node.get("tasks") or {}).items():
                if p in (t.get("description") or ""):
                    api.cancel_task(tid)
        rows = api.request("GET", f"/_cat/indices/*{p}*", params={"format": "json", "h": "index",
                                                                   "expand_wildcards": "all"})
        names = sorted(r["index"] for r in rows)
        for i in range(0, len(names), 50):
            api.request("DELETE", "/" + ",".join(names[i:i + 50]))
        for path, key in (("_index_template", "index_templates"), ("_component_template", "component_templates")):
            try:
                for t in api.request("GET", f"/{path}/{p}*").get(key) or []:
                    api.request("DELETE", f"/{path}/{t['name']}")
            except SearchError as exc:
                if exc.status != 404:
                    raise
        for path in ("_template", "_ingest/pipeline"):
            try:
                for name in api.request("GET", f"/{path}/{p}*") or {}:
                    api.request("DELETE", f"/{path}/{name}")
            except SearchError as exc:
                if exc.status != 404:
                    raise
        api.close()


def _search_target(engine: str, url: str):
    target = SearchTarget(engine, url)
    expected = "opensearch" if engine == "opensearch" else "elasticsearch"
    if target.api.server.flavour != expected:
        target.api.close()
        pytest.fail(f"{url} is {target.api.server.label}, expected {expected}")
    ENGINE_LABELS.setdefault(engine, target.label)
    return target


@pytest.fixture
def opensearch_target():
    """The shared OpenSearch server (OPENSEARCH_URL) behind a prefix unique to this test."""
    target = _search_target("opensearch", OPENSEARCH_URL)
    yield target
    target.cleanup()


@pytest.fixture
def elasticsearch_target():
    """A real Elasticsearch 8/9 (ES_URL) behind a prefix unique to this test; skipped without ES_URL."""
    if not ES_URL:
        pytest.skip("Elasticsearch not run: ES_URL is not set (docker compose up elasticsearch, then "
                    "ES_URL=http://127.0.0.1:9200)")
    target = _search_target("elasticsearch", ES_URL)
    yield target
    target.cleanup()


@pytest.fixture(params=[pytest.param("opensearch", marks=pytest.mark.engine("opensearch")),
                        pytest.param("elasticsearch", marks=pytest.mark.engine("elasticsearch"))])
def search_target(request):
    """The same test on OpenSearch and (when ES_URL is set) on Elasticsearch."""
    return request.getfixturevalue(f"{request.param}_target")


MONGO_URI = os.environ.get("MONGO_URI", "mongodb://127.0.0.1:27018")


def mongo_url_for(dbname: str) -> str:
    """MONGO_URI with its database replaced by ``dbname`` (options kept)."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(MONGO_URI)._replace(path=f"/{dbname}"))


@pytest.fixture(scope="session")
def mongo_server():
    """What answers at MONGO_URI (``ServerInfo``: FerretDB or a real MongoDB), asked once per session."""
    import pymongo

    from polymigrate.adapters.mongodb.server import server_info

    client = pymongo.MongoClient(MONGO_URI, serverSelectionTimeoutMS=5000)
    try:
        info = server_info(client)
    except pymongo.errors.PyMongoError as exc:
        client.close()
        pytest.fail(f"no MongoDB-protocol server at {MONGO_URI}: {exc} (run `make engines`, which starts FerretDB)")
    ENGINE_LABELS.setdefault("mongodb", f"{info.label} ({MONGO_URI.split('@')[-1].split('//')[-1].split('/')[0]})")
    yield info
    client.close()


@pytest.fixture
def make_mongo_database(mongo_server):
    """Factory of fresh, uniquely named databases on MONGO_URI (URLs), dropped after the test."""
    import pymongo

    created: list[str] = []

    def make(prefix: str = "pm_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        created.append(name)
        return mongo_url_for(name)

    yield make
    client = pymongo.MongoClient(MONGO_URI, serverSelectionTimeoutMS=5000)
    try:
        for name in created:
            client.drop_database(name)
    finally:
        client.close()


@pytest.fixture
def mongo_url(make_mongo_database) -> str:
    """A fresh database URL on the MongoDB-protocol server."""
    return make_mongo_database()


@pytest.fixture
def real_mongodb(mongo_server):
    """Skips (saying why) unless MONGO_URI is a real MongoDB: what FerretDB lacks is tested there."""
    if mongo_server.is_ferretdb:
        pytest.skip(f"needs a real MongoDB; MONGO_URI is {mongo_server.label}: `docker compose up -d mongo` "
                    "then MONGO_URI=mongodb://127.0.0.1:27017")
    return mongo_server


# --- which engine each test ran on (printed at the end of every run) ------------------------------
# A test counts for an engine when it uses one of that engine's fixtures (directly or through
# another fixture) or carries ``@pytest.mark.engine("name")`` (tests that start their own server).
ENGINE_FIXTURES: dict[str, str] = {
    "make_pg_database": "postgresql",
    "redis_url": "redis",
    "opensearch_target": "opensearch",
    "elasticsearch_target": "elasticsearch",
    "make_mongo_database": "mongodb",
}
ENGINE_LABELS: dict[str, str] = {}  # engine -> "PostgreSQL 15.18", filled by the fixtures that meet the server
_ENGINE_DEFAULT_LABELS = {"postgresql": "PostgreSQL", "redis": "Redis", "mongodb": "MongoDB protocol",
                          "elasticsearch": "Elasticsearch", "opensearch": "OpenSearch", "airflow": "Airflow", "flyway": "Flyway",
                          "airflow-cluster": "Airflow cluster (CeleryExecutor, 2 workers)",
                          "chromium": "Chromium"}
_engine_counts: Counter = Counter()
_module_cpu: Counter = Counter()  # CPU seconds per test module: the process and its finished children
_module_wall: Counter = Counter()


def _cpu_now() -> float:
    import resource

    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


_cpu_last = [None]


def _machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, every core, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields) - idle) / tick, sum(fields) / tick


_machine_start = _machine_cpu()


def pytest_configure(config):
    config.addinivalue_line("markers", "engine(name, ...): the test talks to this engine (counted in the summary)")


# The modules that take minutes run first, so under pytest-xdist each starts on a worker of its own
# at once instead of one of them starting last and holding the suite's end back.
# (One per worker: xdist hands the three workers the first three modules, then one more each, which
# waits behind the first; Makefile's --no-loadscope-reorder keeps this order.)
SLOW_FIRST = ("tests/e2e/test_demo.py", "tests/e2e/test_cluster.py", "tests/integration/test_soak_short.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return SLOW_FIRST.index(path) if path in SLOW_FIRST else len(SLOW_FIRST)
    items.sort(key=rank)  # stable: every other test keeps its order


def engines_of(item) -> set[str]:
    found = {ENGINE_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in ENGINE_FIXTURES}
    for mark in item.iter_markers("engine"):
        found.update(mark.args)
    return found


def pytest_runtest_logreport(report):
    # user_properties, not attributes of our own: pytest-xdist sends only those from its workers
    props = dict(report.user_properties)
    ENGINE_LABELS.update({k: v for k, v in props.get("polymigrate_labels", {}).items() if k not in ENGINE_LABELS})
    for module, cpu, wall in props.get("polymigrate_cpu", ()):
        _module_cpu[module] += cpu
        _module_wall[module] += wall
    if report.when == "call" and report.passed:
        for engine in props.get("polymigrate_engines", ()):
            _engine_counts[engine] += 1


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    # the suite is CPU-bound on two cores (three workers): what each module costs in CPU, Airflow's and
    # the engines' client processes included once they have exited, is what bounds its time
    now = _cpu_now()
    if _cpu_last[0] is not None:
        outcome.get_result().user_properties.append(
            ("polymigrate_cpu", [(item.nodeid.split("::", 1)[0], now - _cpu_last[0], call.duration)]))
    _cpu_last[0] = now
    if call.when == "call":
        report = outcome.get_result()
        report.user_properties.append(("polymigrate_engines", sorted(engines_of(item))))
        report.user_properties.append(("polymigrate_labels", dict(ENGINE_LABELS)))


def pytest_terminal_summary(terminalreporter):
    if _module_cpu:
        busy, total = (now - then for now, then in zip(_machine_cpu(), _machine_start))
        terminalreporter.section("CPU per test module (the test processes and their exited children)")
        if total:
            terminalreporter.write_line(f"the machine's cores were busy {busy / total:.0%} of the run ({busy:,.0f} CPU s, the "
                                        "engines' servers and Airflow's daemons included, which the modules' figures leave out)")
        terminalreporter.write_line(f"total {sum(_module_cpu.values()):,.0f} s of CPU in {len(_module_cpu)} modules; "
                                    f"the 20 costliest (CPU s, time s; a process counts once its parent waited for it)")
        for module, cpu in _module_cpu.most_common(20):
            terminalreporter.write_line(f"{cpu:>8.1f} {_module_wall[module]:>8.1f}  {module}")
    if not _engine_counts:
        return
    terminalreporter.section("tests that passed, per engine")
    for engine, n in sorted(_engine_counts.items()):
        label = ENGINE_LABELS.get(engine) or _ENGINE_DEFAULT_LABELS.get(engine, engine)
        terminalreporter.write_line(f"{label:<45} {n:>5}")
