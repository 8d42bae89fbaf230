"""Soak: random releases on all four engines under random faults, each release's end state checked
against the same release run without faults (issue 28, item 7).

    .venv/bin/python bench/soak.py --seed 7 --faults 1000 --minutes 60

Seeded (the same seed gives each engine the same releases, faults and timings to inject them; the
engines' streams run side by side, each with an equal share of the faults), bounded by
``--faults`` and ``--minutes``, loopback only: it uses the engines of ``make engines`` (read from
``.engines/env``) under names of its own (a PostgreSQL database ``pm_soak``, Redis database 7 with
keys and ledgers under a per-release domain, a MongoDB database and OpenSearch indices per release,
prefixed ``pmsoak-``), and deletes what it made.

A release is 2–4 migration files on one engine whose every unit of work increments a counter of
its own (PostgreSQL: one row per statement; Redis: one key per cursor position; MongoDB: one
document per transform step; OpenSearch: blue-green switches, where a second application shows as a
second new index). The runner is the CLI in a subprocess (`polymigrate migrate --url …`), so faults
hit a real process:

* ``kill9``     SIGKILL of the runner at a random moment;
* ``sigstop``   SIGSTOP past the lock's lease (1.5 s), a second runner meanwhile, then SIGCONT;
* ``cut``       the lock's session cut under the runner (PostgreSQL ``pg_terminate_backend`` of the
                 ``polymigrate lock:`` session, Redis ``CLIENT KILL`` of the runner's connections in
                 the soak's database); MongoDB and OpenSearch hold no session lock (a lease), so there
                 this fault is a kill -9 and is counted as one;
* ``second``    a second runner started while the first runs;
* ``edit``      a pending file broken on disk (a syntax error), a run, the file restored (the human
                 step), and ``repair`` if the run is refused saying so (counted as a human step too).

* ``restart``   kill -9 of the server under the run and a restart on the same files: on the soak's
                 own servers (``postgresql-private``: initdb in a temporary folder, the whole process
                 group killed; ``mongodb-private``: a FerretDB on SQLite files; ``redis-private``:
                 append-only file, fsync always); the shared engines are never stopped (other
                 engineers' tests use them), so on them this fault is a kill -9 of the runner and is
                 counted as one.

After the faults, the release is rerun (at most 8 times) until a run exits 0; then the end state
(counters, ledger versions and statuses, aliases and indices) is compared with the reference run.
A counter above the reference is a double apply, one below it a lost write. It prints faults
injected, recoveries, double applies, lost writes, releases that never completed and runs that
needed a human step, and exits 1 if any double apply, lost write or incomplete release was seen.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
import shutil
import tempfile
import threading

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))
CLI = [sys.executable, "-c", "from polymigrate.cli import main; main()"]
LEASE_MS = 1500
FAULTS = ("kill9", "sigstop", "cut", "second", "edit", "restart")


def load_env() -> None:
    path = ROOT / ".engines" / "env"
    if not path.exists():
        return
    for line in path.read_text().splitlines():  # ``export NAME="${NAME:-value}"`` (scripts/engines.sh)
        m = re.match(r'export (\w+)="(?:\$\{\w+:-(.*)\}|(.*))"$', line.strip())
        if m:
            os.environ.setdefault(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))


# --- engines ---------------------------------------------------------------------------------------

class Engine:
    name = ""
    session_lock = False
    quick = False  # shorter files (CI's short soak): faults land in the CLI's start more often

    def target(self, tag: str) -> tuple[str, list[str]]:
        """(URL, extra CLI arguments) of a fresh target for release ``tag``."""
        raise NotImplementedError

    def files(self, rng: random.Random, tag: str, n: int) -> dict[str, str]:
        raise NotImplementedError

    def seed(self, tag: str, url: str, files: dict[str, str]) -> None:
        """The data the release changes, as it exists before the release."""

    def broken(self, text: str) -> str:
        raise NotImplementedError

    def state(self, tag: str, url: str) -> dict:
        """{"counters": {name: int}, "ledger": [(version, status)], ...} of the target."""
        raise NotImplementedError

    def cut(self, tag: str, url: str) -> bool:
        return False

    def drop(self, tag: str, url: str) -> None:
        pass

    def ledger(self, url: str, tag: str, **kw) -> list[tuple[str, str]]:
        adapter = self.adapter(url, tag)
        try:
            return sorted((e.version or e.description, e.status.value) for e in adapter.read_ledger()
                          if not e.type.startswith("UNDO"))
        finally:
            adapter.close()

    def adapter(self, url: str, tag: str):
        raise NotImplementedError


class Postgres(Engine):
    name, session_lock = "postgresql", True

    def __init__(self) -> None:
        import psycopg
        base = os.environ["POLYMIGRATE_TEST_PG"]
        self.url = base.rsplit("/", 1)[0] + "/pm_soak"
        with psycopg.connect(base, autocommit=True) as c:
            if not c.execute("SELECT 1 FROM pg_database WHERE datname = 'pm_soak'").fetchone():
                c.execute("CREATE DATABASE pm_soak")

    def _q(self, text: str, params=None):
        import psycopg
        with psycopg.connect(self.url, autocommit=True) as c:
            cur = c.execute(text, params)
            return cur.fetchall() if cur.description else None

    def target(self, tag):
        return self.url, ["-d", tag]

    def files(self, rng, tag, n):
        out = {}
        for j in range(1, n + 1):
            lines = []
            steps = rng.randint(3, 6)
            tx = rng.random() < 0.4
            if not tx:
                lines.append("-- polymigrate: transactional=false")
            for s in range(steps):
                lines.append(f"UPDATE {tag}_cnt SET n = n + 1 WHERE k = 'f{j}s{s}';")
                lines.append(f"SELECT pg_sleep({rng.choice([0.01, 0.02] if self.quick else [0.02, 0.05, 0.1])});")
            out[f"V{j}__step_{j}.sql"] = "\n".join(lines) + "\n"
        return out

    def seed(self, tag, url, files):
        keys = [k for text in files.values() for k in re.findall(r"WHERE k = '(\w+)'", text)]
        self._q(f"CREATE TABLE IF NOT EXISTS {tag}_cnt (k text PRIMARY KEY, n int NOT NULL DEFAULT 0)")
        self._q(f"INSERT INTO {tag}_cnt SELECT unnest(%s::text[]), 0 ON CONFLICT (k) DO UPDATE SET n = 0", [keys])

    def broken(self, text):
        return text.replace("UPDATE ", "UPDAT ", 1)

    def state(self, tag, url):
        return {"counters": dict(self._q(f"SELECT k, n FROM {tag}_cnt")), "ledger": self.ledger(url, tag)}

    def adapter(self, url, tag):
        from polymigrate.adapters.postgresql.adapter import PostgresAdapter
        return PostgresAdapter.from_url(url, domain=tag)

    def cut(self, tag, url):
        rows = self._q("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'pm_soak' "
                       "AND application_name LIKE %s", [f"polymigrate lock:%"])
        return bool(rows)

    def drop(self, tag, url):
        self._q(f"DROP TABLE IF EXISTS {tag}_cnt")
        self._q("DELETE FROM polymigrate.schema_history WHERE domain = %s", [tag])


class Redis(Engine):
    name, session_lock = "redis", True
    DB = 25  # a DB no test names (tests/e2e/test_phased_dag uses 7), so a soak beside the suite flushes nothing of it

    def __init__(self) -> None:
        import redis
        self.base = os.environ["POLYMIGRATE_TEST_REDIS"].rstrip("/")
        self.client = redis.Redis.from_url(f"{self.base}/{self.DB}")

    def target(self, tag):
        return f"{self.base}/{self.DB}?lease_ms={LEASE_MS}", ["-d", tag]

    def files(self, rng, tag, n):
        out = {}
        for j in range(1, n + 1):
            positions = rng.randint(8, 25)
            out[f"{j}-count-{j}.lua"] = (
                f"-- polymigrate: batch_size=1, pause_ms={rng.choice([5, 10] if self.quick else [10, 30, 60])}\n"
                "local i = tonumber(ARGV[1])\n"
                f"redis.call('INCR', 'pmsoak:{tag}:f{j}:' .. i)\n"
                "i = i + 1\n"
                f"if i >= {positions} then return {{'0', 1}} end\n"
                "return {tostring(i), 1}\n")
        return out

    def seed(self, tag, url, files):
        for j, text in enumerate(files.values(), 1):
            positions = int(re.search(r"if i >= (\d+)", text).group(1))
            self.client.mset({f"pmsoak:{tag}:f{j}:{i}": 0 for i in range(positions)})

    def broken(self, text):
        return text.replace("local i =", "local i = =", 1)

    def state(self, tag, url):
        keys = list(self.client.scan_iter(match=f"pmsoak:{tag}:*", count=500))
        values = self.client.mget(keys) if keys else []
        return {"counters": {k.decode(): int(v) for k, v in zip(keys, values)}, "ledger": self.ledger(url, tag)}

    def adapter(self, url, tag):
        from polymigrate.adapters.redis.adapter import RedisAdapter
        return RedisAdapter.from_url(url, domain=tag)

    def cut(self, tag, url):
        """CLIENT KILL of every other connection in the soak's database (other tests use others)."""
        me = self.client.client_id()
        killed = 0
        for c in self.client.client_list():
            if int(c.get("db", -1)) == self.DB and int(c["id"]) != me:
                try:
                    self.client.execute_command("CLIENT", "KILL", "ID", c["id"])
                    killed += 1
                except Exception:  # noqa: BLE001  gone already
                    pass
        return killed > 0

    def drop(self, tag, url):
        keys = list(self.client.scan_iter(match=f"pmsoak:{tag}:*", count=500))
        keys += list(self.client.scan_iter(match=f"*{tag}*", count=500))
        if keys:
            self.client.delete(*set(keys))


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(what: str, ready, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {seconds:.0f} s")
        time.sleep(0.1)


class PrivateServer:
    """A server of the soak's own in its own process group (``_start`` sets ``server``), so the
    ``restart`` fault can SIGKILL it under a run, every process of it at once, and start it again on
    the same files; ``close`` kills it and deletes its folder."""
    server: subprocess.Popen | None
    dir: Path

    def _start(self) -> None:
        raise NotImplementedError

    def _kill(self) -> None:
        if self.server is not None:
            try:
                os.killpg(self.server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.server.wait(10)

    def restart(self) -> None:
        self._kill()
        time.sleep(0.3)
        self._start()

    def close(self) -> None:
        self._kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis(PrivateServer, Redis):
    """A redis-server of the soak's own (append-only file, fsync always), so it can be killed and
    restarted under a run without touching the shared engines: the ``restart`` fault."""
    name = "redis-private"
    DB = 0

    def __init__(self) -> None:
        import redis
        self.dir = Path(tempfile.mkdtemp(prefix="pmsoak-redis-"))
        self.port = _free_port()
        self.server: subprocess.Popen | None = None
        self._start()
        self.base = f"redis://127.0.0.1:{self.port}"
        self.client = redis.Redis.from_url(f"{self.base}/{self.DB}")

    def _start(self) -> None:
        import redis

        def ready() -> bool:
            try:
                return bool(redis.Redis(port=self.port, socket_timeout=1).ping())
            except redis.RedisError:
                return False
        self.server = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(f"private redis-server on {self.port}", ready, 20)


class PrivatePostgres(PrivateServer, Postgres):
    """A postmaster of the soak's own (initdb in a temporary folder, fsync on, the defaults), so the
    ``restart`` fault can SIGKILL the whole server under a run, backends and all (a server crash: what
    was written but not checkpointed is replayed from the WAL), and start it again on the same files:
    PostgreSQL's crash recovery, then the rerun."""
    name = "postgresql-private"

    def __init__(self) -> None:
        import psycopg
        self.bin = Path(os.environ.get("POLYMIGRATE_PG_BIN") or "/usr/lib/postgresql/15/bin")
        self.dir = Path(tempfile.mkdtemp(prefix="pmsoak-pg-"))
        self.data = self.dir / "data"
        # postgres refuses to run as root: as root, run it as the postgres user directly (not through
        # runuser, whose own process would stand between the kill and the postmaster)
        self.owner = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
        if self.owner:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                        "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"], check=True, capture_output=True,
                       cwd="/", **self.owner)
        self.port = _free_port()
        self.server: subprocess.Popen | None = None
        self._start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/pm_soak"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE pm_soak")

    def _ready(self) -> bool:
        import psycopg
        try:
            psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def _start(self) -> None:
        # its own process group: the restart kills the postmaster and every backend at once (a
        # postmaster killed alone leaves backends holding the shared memory, and the new one refuses)
        self.server = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd="/", **self.owner)
        _wait("the private postgres", self._ready)



class Mongo(Engine):
    name = "mongodb"

    def __init__(self) -> None:
        import pymongo
        self.base = os.environ["MONGO_URI"].rstrip("/")
        self.client = pymongo.MongoClient(self.base, serverSelectionTimeoutMS=10_000)

    def target(self, tag):
        return f"{self.base}/{tag}?lease_ms={LEASE_MS}", ["-d", tag]

    def files(self, rng, tag, n):
        out = {}
        for j in range(1, n + 1):
            out[f"{j}-inc-{j}.py"] = (
                "def up(db, ctx):\n"
                f"    ctx.transform('c{j}', {{}}, {{'$inc': {{'n': 1}}}}, batch_size={rng.choice([1, 2, 3])}, "
                f"pause_ms={rng.choice([5, 20] if self.quick else [20, 50, 80])}, name='inc')\n")
        return out

    def seed(self, tag, url, files):
        db = self.client[tag]
        for j in range(1, len(files) + 1):
            db[f"c{j}"].insert_many([{"_id": f"d{i}", "n": 0} for i in range(random.Random(j).randint(6, 14))])

    def broken(self, text):
        return text.replace("def up", "def up up", 1)

    def state(self, tag, url):
        db = self.client[tag]
        counters = {f"{c}/{d['_id']}": d["n"] for c in db.list_collection_names() if re.fullmatch(r"c\d+", c)
                    for d in db[c].find({}, {"n": 1})}
        return {"counters": counters, "ledger": self.ledger(url, tag)}

    def adapter(self, url, tag):
        from polymigrate.adapters.mongodb.adapter import MongoAdapter
        return MongoAdapter.from_url(url, domain=tag)

    def drop(self, tag, url):
        self.client.drop_database(tag)


class PrivateMongo(PrivateServer, Mongo):
    """A FerretDB of the soak's own (SQLite backend in a temporary folder): the ``restart`` fault
    SIGKILLs the server under a transform and starts it again on the same files."""
    name = "mongodb-private"

    def __init__(self) -> None:
        import pymongo
        found = sorted((ROOT / ".engines" / "bin").glob("ferretdb-*"))
        if not found:
            raise RuntimeError("no FerretDB binary in .engines/bin: run `make engines` first")
        self.binary = found[-1]
        self.dir = Path(tempfile.mkdtemp(prefix="pmsoak-ferret-"))
        (self.dir / "data").mkdir()
        self.port = _free_port()
        self.server: subprocess.Popen | None = None
        self.base = f"mongodb://127.0.0.1:{self.port}"
        self._start()
        self.client = pymongo.MongoClient(self.base, serverSelectionTimeoutMS=10_000)

    def _ready(self) -> bool:
        import pymongo
        try:
            with pymongo.MongoClient(self.base, serverSelectionTimeoutMS=1000) as c:
                c.admin.command("ping")
            return True
        except pymongo.errors.PyMongoError:
            return False

    def _start(self) -> None:
        self.server = subprocess.Popen(
            [str(self.binary), "--handler=sqlite", f"--sqlite-url=file:{self.dir}/data/",
             f"--listen-addr=127.0.0.1:{self.port}", f"--state-dir={self.dir}", "--debug-addr=127.0.0.1:0",
             "--telemetry=disable", "--log-level=error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait("the private ferretdb", self._ready)

    def close(self) -> None:
        self.client.close()
        super().close()


class Search(Engine):
    name = "elasticsearch"

    def __init__(self) -> None:
        from polymigrate.adapters.elasticsearch.api import SearchApi
        self.base = os.environ["OPENSEARCH_URL"].rstrip("/")
        self.api = SearchApi.from_url(self.base)

    def _ledger(self, tag):
        return f".polymigrate-pmsoak-{tag}-ledger"

    def target(self, tag):
        return f"{self.base}?lease_ms={LEASE_MS}&poll_seconds=0.2", ["-d", tag, "--table", self._ledger(tag)]

    def files(self, rng, tag, n):
        out = {}
        for j in range(1, n + 1):
            out[f"{j}-switch-{j}.json"] = json.dumps({"description": f"switch {j}", "steps": [{"blue_green": {
                "alias": f"pmsoak-{tag}-a{j}", "catch_up": "none", "requests_per_second": rng.choice([200, 500] if self.quick else [20, 50, 100]),
                "body": {"settings": {"number_of_shards": 1, "number_of_replicas": 0},
                         "mappings": {"properties": {"n": {"type": "long"}, "k": {"type": "keyword"}}}}}}]},
                indent=1)
        return out

    def seed(self, tag, url, files):
        for j in range(1, len(files) + 1):
            index = f"pmsoak-{tag}-a{j}_v1"
            self.api.create_index(index, {"settings": {"number_of_shards": 1, "number_of_replicas": 0},
                                          "mappings": {"properties": {"n": {"type": "long"}}}})
            self.api.update_aliases([{"add": {"index": index, "alias": f"pmsoak-{tag}-a{j}"}}])
            lines = []
            for i in range(random.Random(j).randint(20, 60)):
                lines.append(json.dumps({"index": {"_index": index, "_id": f"d{i}"}}))
                lines.append(json.dumps({"n": i, "k": f"k{i}"}))
            self.api.client.transport.perform_request("POST", "/_bulk", params={"refresh": "true"},
                                                      body="\n".join(lines) + "\n")

    def broken(self, text):
        return text.replace("{", "{{", 1)

    def state(self, tag, url):
        rows = self.api.request("GET", f"/_cat/indices/pmsoak-{tag}-*", params={"format": "json", "h": "index,docs.count"})
        counters = {r["index"]: int(r["docs.count"]) for r in rows}
        aliases = {}
        for j in range(1, 10):
            a = f"pmsoak-{tag}-a{j}"
            try:
                aliases[a] = sorted(self.api.alias_targets(a))
            except Exception:  # noqa: BLE001
                pass
        # documents behind each alias are what the application sees: a double apply or a lost write
        # shows there; an index that only exists after the faults is listed as left behind
        served = {a: self.api.count(a) for a, v in aliases.items() if v}
        return {"counters": served, "indices": counters, "aliases": {k: v for k, v in aliases.items() if v},
                "ledger": self.ledger(url, tag)}

    def adapter(self, url, tag):
        from polymigrate.adapters.elasticsearch.adapter import ElasticsearchAdapter
        from polymigrate.spec import TechnologyConfig
        return ElasticsearchAdapter.from_url(url, domain=tag, settings=TechnologyConfig(ledger=self._ledger(tag)))

    def drop(self, tag, url):
        rows = self.api.request("GET", f"/_cat/indices/*pmsoak-{tag}-*", params={"format": "json", "h": "index",
                                                                               "expand_wildcards": "all"})
        names = [r["index"] for r in rows]
        if names:
            self.api.request("DELETE", "/" + ",".join(names))


# --- the runner under faults -----------------------------------------------------------------------

@dataclass
class Tally:
    releases: int = 0
    faults: Counter = field(default_factory=Counter)
    recoveries: int = 0
    double_applies: int = 0
    lost_writes: int = 0
    incomplete: int = 0
    human_steps: int = 0
    runs: int = 0
    leftovers: int = 0  # objects a killed try left behind that the run without faults does not have
    landed: int = 0  # faults that hit a runner still running (or a file), not one already done
    findings: list = field(default_factory=list)

    @property
    def injected(self) -> int:
        return sum(self.faults.values())


def start(folder: Path, url: str, extra: list[str], *, lock_wait: float = 30) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "migrate", "--url", url, "--locations", str(folder), "--lock-wait", str(lock_wait),
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return -9, (out or "") + (err or "") + "\n[soak: killed after its timeout]"
    return proc.returncode, (out or "") + (err or "")


def run(folder: Path, url: str, extra: list[str], tally: Tally, lock_wait: float = 30) -> tuple[int, str]:
    tally.runs += 1
    return finish(start(folder, url, extra, lock_wait=lock_wait))


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def inject(kind: str, engine: Engine, rng: random.Random, folder: Path, files: dict[str, str], url: str,
           extra: list[str], tag: str, tally: Tally, log) -> None:
    if kind == "cut" and not engine.session_lock:
        kind = "kill9"  # a lease, no session to cut: counted as what it is
    if kind == "restart" and not hasattr(engine, "restart"):
        kind = "kill9"  # a shared engine is never stopped: counted as what it is
    tally.faults[f"{engine.name}:{kind}"] += 1
    if kind == "edit":
        pending = sorted(files)
        name = rng.choice(pending)
        (folder / name).write_text(engine.broken(files[name]))
        code, text = run(folder, url, extra, tally)
        (folder / name).write_text(files[name])  # the human fixes the file
        tally.human_steps += 1
        tally.landed += int(code != 0)
        log(f"    edit {name}: run exit {code}; restored")
        return
    proc = start(folder, url, extra)
    tally.runs += 1
    time.sleep(rng.uniform(0.6, 2.5))  # the CLI's start is ~0.6-1 s; the fault lands anywhere after
    tally.landed += int(proc.poll() is None)
    if kind == "kill9":
        kill(proc)
        finish(proc)
    elif kind == "sigstop":
        kill(proc, signal.SIGSTOP)
        time.sleep(LEASE_MS / 1000 + rng.uniform(0.3, 1.5))
        other = start(folder, url, extra, lock_wait=5)
        tally.runs += 1
        time.sleep(rng.uniform(0.5, 3))
        kill(proc, signal.SIGCONT)
        finish(other)
        finish(proc)
    elif kind == "cut":
        engine.cut(tag, url)
        finish(proc)
    elif kind == "restart":
        engine.restart()  # type: ignore[attr-defined]
        finish(proc)
    elif kind == "second":
        other = start(folder, url, extra)
        tally.runs += 1
        finish(other)
        finish(proc)


def complete(folder: Path, url: str, extra: list[str], tally: Tally, log) -> bool:
    """Reruns until one exits 0; ``repair`` when a run is refused asking for it (a human step)."""
    for attempt in range(8):
        code, text = run(folder, url, extra, tally)
        if code == 0:
            return True
        if "polymigrate repair" in text and ("changed" in text or "missing" in text):
            tally.human_steps += 1
            rc = subprocess.run([*CLI, "repair", "--url", url, "--locations", str(folder), *extra],
                                capture_output=True, text=True, timeout=120)
            log(f"    rerun {attempt + 1} refused; repair exit {rc.returncode}")
            continue
        log(f"    rerun {attempt + 1} exit {code}: " + " | ".join(text.strip().splitlines()[-4:])[:600])
        time.sleep(LEASE_MS / 1000)  # a lease left by a killed run expires
    return False


def compare(ref: dict, got: dict, tally: Tally, where: str) -> None:
    for k, want in ref["counters"].items():
        have = got["counters"].get(k, 0)
        if have > want:
            tally.double_applies += 1
            tally.findings.append(f"{where}: {k} = {have}, without faults {want} (applied twice)")
        elif have < want:
            tally.lost_writes += 1
            tally.findings.append(f"{where}: {k} = {have}, without faults {want} (lost)")
    for k in set(got["counters"]) - set(ref["counters"]):
        tally.double_applies += 1
        tally.findings.append(f"{where}: {k} exists only after the faults (a second application)")
    for name in sorted(set((got.get("indices") or {})) - set((ref.get("indices") or {}))):
        tally.leftovers += 1
        tally.findings.append(f"{where}: index {name} ({got['indices'][name]} documents) was left behind; "
                              f"without faults the indices are {sorted(ref['indices'])}")
    for key in ("ledger",):
        if ref.get(key) != got.get(key):
            tally.findings.append(f"{where}: {key} {got.get(key)} differs from {ref.get(key)} without faults")
            if key == "ledger":
                tally.incomplete += 1


def normalise(engine: Engine, state: dict, tag: str) -> dict:
    """Names carry the release's tag; the reference ran under another one."""
    def n(x):
        return json.loads(json.dumps(x).replace(tag, "TAG"))
    return n(state)


def soak(seed: int, faults: int, minutes: float, engines: list[str], log=print, quick: bool = False) -> Tally:
    """The engines' releases run side by side, one stream per engine (a thread driving its own
    subprocesses and servers): releases on different engines share nothing, and a stream mostly
    waits on its runners, its faults' timing and its servers' restarts. Each stream has a random
    generator of its own, seeded from ``seed`` and its engine's name, and an equal share of
    ``faults``, so a seed still gives each engine the same releases and faults."""
    load_env()
    makers = {"postgresql": Postgres, "postgresql-private": PrivatePostgres, "redis": Redis,
              "redis-private": PrivateRedis, "mongodb": Mongo, "mongodb-private": PrivateMongo,
              "elasticsearch": Search}
    live = {name: makers[name]() for name in engines}
    for engine in live.values():
        engine.quick = quick
    deadline = time.monotonic() + minutes * 60
    work = Path(tempfile.mkdtemp(prefix="pmsoak-"))
    names = sorted(live)
    shares = {name: faults // len(names) + int(i < faults % len(names)) for i, name in enumerate(names)}
    tallies = {name: Tally() for name in names}
    errors: dict[str, BaseException] = {}

    def stream(name: str) -> None:
        try:
            _stream(live[name], random.Random(f"{seed}:{name}"), seed, shares[name], deadline, work, tallies[name],
                    log)
        except BaseException as exc:  # re-raised in the caller's thread, after every stream ended
            errors[name] = exc

    threads = [threading.Thread(target=stream, args=(name,), name=f"soak-{name}") for name in names]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for engine in live.values():
            if hasattr(engine, "close"):
                engine.close()
    if errors:
        name, exc = next(iter(errors.items()))
        raise RuntimeError(f"the {name} stream stopped: {exc}") from exc
    return merge(tallies.values())


def merge(tallies) -> Tally:
    total = Tally()
    for t in tallies:
        for f in fields(Tally):
            mine, theirs = getattr(total, f.name), getattr(t, f.name)
            if isinstance(mine, Counter):
                mine.update(theirs)
            elif isinstance(mine, list):
                mine.extend(theirs)
            else:
                setattr(total, f.name, mine + theirs)
    return total


def _stream(engine: Engine, rng: random.Random, seed: int, faults: int, deadline: float, work: Path, tally: Tally,
            log) -> None:
    """One engine's releases, each run once without faults and once with, until its share of faults
    is injected or the deadline passes."""
    while tally.injected < faults and time.monotonic() < deadline:
        rid = f"s{seed}r{tally.releases}{uuid.uuid4().hex[:4]}"
        files = engine.files(rng, "TAG", rng.randint(2, 4))
        n_faults = min(rng.randint(1, 3), faults - tally.injected)
        plan = [rng.choice(FAULTS) for _ in range(n_faults)]
        log(f"release {tally.releases} on {engine.name}: {len(files)} files, faults {plan}")
        states = {}
        for tag, faulty in ((rid + "ref", False), (rid + "f", True)):
            tagged = {name: text.replace("TAG", tag) for name, text in files.items()}
            folder = work / tag / engine.name
            folder.mkdir(parents=True)
            for name, text in tagged.items():
                (folder / name).write_text(text)
            url, extra = engine.target(tag)
            engine.seed(tag, url, tagged)
            try:
                if faulty:
                    for kind in plan:
                        inject(kind, engine, rng, folder, tagged, url, extra, tag, tally, log)
                    ok = complete(folder, url, extra, tally, log)
                    tally.recoveries += int(ok)
                    if not ok:
                        tally.incomplete += 1
                        tally.findings.append(f"{engine.name} {tag}: never completed after {plan}")
                else:
                    code, text = run(folder, url, extra, tally)
                    if code != 0:
                        raise RuntimeError(f"the run without faults failed: {text[-2000:]}")
                states[faulty] = normalise(engine, engine.state(tag, url), tag)
            finally:
                engine.drop(tag, url)
        compare(states[False], states[True], tally, f"{engine.name} release {tally.releases} {plan}")
        tally.releases += 1


def report(t: Tally, seconds: float) -> str:
    lines = [f"releases {t.releases}, runs {t.runs}, {seconds:.0f} s",
             f"faults injected {t.injected}: " + ", ".join(f"{k} {v}" for k, v in sorted(t.faults.items())),
             f"faults that hit a runner still at work (the others found it finished) {t.landed}",
             f"recoveries (releases completed after their faults) {t.recoveries}",
             f"double applies {t.double_applies}", f"lost writes {t.lost_writes}",
             f"releases not completed or ending unlike the run without faults {t.incomplete}",
             f"runs needing a human step (a file fixed, or repair) {t.human_steps}",
             f"objects left behind by a killed try (not served, not counted above) {t.leftovers}"]
    lines += [f"  finding: {f}" for f in t.findings[:50]]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--faults", type=int, default=50)
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--engines", default="postgresql,redis,redis-private,mongodb,elasticsearch")
    p.add_argument("--quick", action="store_true", help="shorter files (the CI test's profile)")
    a = p.parse_args()
    t0 = time.monotonic()
    t = soak(a.seed, a.faults, a.minutes, a.engines.split(","), quick=a.quick)
    print(report(t, time.monotonic() - t0), flush=True)
    sys.exit(1 if t.double_applies or t.lost_writes or t.incomplete else 0)


if __name__ == "__main__":
    main()
