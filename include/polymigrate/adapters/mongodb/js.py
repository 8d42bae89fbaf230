"""Run migrate-mongo ``.js`` migrations through Node and the official ``mongodb`` driver.

Where Node modules come from (the first that exists):

1. ``POLYMIGRATE_NODE_MODULES`` (``scripts/engines.sh up node`` installs ``scripts/engines/node``'s
   lock file into ``.engines/node`` and writes this variable into ``.engines/env``);
2. ``<repository>/.engines/node/node_modules`` (the same, when the variable is not exported);
3. Node's own resolution from the migration's folder upwards (a project's ``node_modules``).

The ``mongodb`` driver must be found by one of them; modules a migration ``require``s are resolved
from its folder first, then from the same places. ``check`` resolves them all before anything runs.
The connection string reaches the child in its environment only, and the child exits when we die
(it watches its parent pid), so a killed run never leaves a migration running on its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from polymigrate.errors import PermanentError, Problem, SpecError, TransientError

log = logging.getLogger("polymigrate.mongo.js")
RUNNER = Path(__file__).with_name("node") / "runner.js"
_REPO = Path(__file__).resolve().parents[4]  # include/polymigrate/adapters/mongodb/js.py -> the repository
_TRANSIENT_NAMES = ("MongoNetworkError", "MongoNetworkTimeoutError", "MongoServerSelectionError",
                    "MongoNotConnectedError", "MongoTopologyClosedError", "PoolClearedError", "LeaseLost")


def node_binary() -> str:
    found = os.environ.get("POLYMIGRATE_NODE") or shutil.which("node")
    if not found:
        raise PermanentError("Node.js is not installed, and .js MongoDB migrations run with it",
                             hint="install Node 20+ (apt-get install nodejs npm), then `bash scripts/engines.sh up node`")
    return found


def node_modules() -> str | None:
    for candidate in (os.environ.get("POLYMIGRATE_NODE_MODULES"), str(_REPO / ".engines" / "node" / "node_modules")):
        if candidate and Path(candidate).is_dir():
            return candidate
    return None


def _env(url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    modules = node_modules()
    if modules:
        env["NODE_PATH"] = os.pathsep.join(p for p in (modules, env.get("NODE_PATH", "")) if p)
    if url:
        env["POLYMIGRATE_MONGO_URL"] = url
    return env


def _call(request: dict, url: str | None, timeout: float | None = None) -> dict:
    proc = subprocess.Popen([node_binary(), str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(url), text=True)

    def relay() -> None:  # the migration's console output, line by line, into our log
        assert proc.stderr is not None
        for line in proc.stderr:
            log.info("node: %s", line.rstrip())

    t = threading.Thread(target=relay, daemon=True)
    t.start()
    try:
        stdout, _ = proc.communicate(json.dumps(request), timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise TransientError("the Node migration runner did not answer in time") from None
    t.join(timeout=5)
    lines = [line for line in (stdout or "").splitlines() if line.strip()]
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise PermanentError(f"the Node migration runner failed (exit {proc.returncode}) without an answer: "
                             f"{(stdout or '')[-500:]}") from None


def check(files: list[tuple[Any, str]]) -> list[Problem]:
    """Problems of ``.js`` files (path, rendered source) found without running them: syntax errors and
    ``require``/``import`` of modules that are not installed."""
    if not files:
        return []
    reply = _call({"action": "check", "files": [{"path": str(Path(p).resolve()), "source": s} for p, s in files]},
                  None, timeout=120)
    out = []
    for p in reply.get("problems", []):
        hint = (f"npm install {p['module']} next to the migrations (their package.json), or into "
                "POLYMIGRATE_NODE_MODULES") if p.get("module") else "fix the file"
        out.append(Problem(p["path"], p["message"], line=p.get("line"), hint=hint))
    return out


def run(path: Any, source: str, fn: str, *, url: str, database: str, lease: dict | None = None) -> int:
    """Call ``fn`` (up/down) of one migration; returns the milliseconds it took."""
    reply = _call({"action": "run", "fn": fn, "db": database, "lease": lease,
                   "file": {"path": str(Path(path).resolve()), "source": source}}, url)
    if reply.get("ok"):
        return int(reply.get("ms", 0))
    e = reply.get("error") or {}
    message = f"{fn}() failed: {e.get('name', 'Error')}: {e.get('message', '')}"
    if e.get("code") is not None:
        message += f" [code {e.get('code')}{' ' + e['codeName'] if e.get('codeName') else ''}]"
    transient = e.get("name") in _TRANSIENT_NAMES or bool(e.get("labels"))
    if e.get("name") == "DriverMissing":
        raise PermanentError(e.get("message", ""), file=path,
                             hint="bash scripts/engines.sh up node (or set POLYMIGRATE_NODE_MODULES)")
    if e.get("name") == "SyntaxError" or e.get("code") == "MODULE_NOT_FOUND":
        raise SpecError([Problem(str(path), message, line=e.get("line"), hint="fix the file or install the module")])
    cls = TransientError if transient else PermanentError
    from polymigrate.adapters.mongodb.server import SHUTDOWN, TRANSIENT_CODES
    if isinstance(e.get("code"), int) and e["code"] in TRANSIENT_CODES or SHUTDOWN.search(e.get("message") or ""):
        cls = TransientError  # the same rule as the Python driver's errors (server.is_transient)
    raise cls(message, file=path, line=e.get("line"), statement=(e.get("stack") or "")[:600] or None,
              hint="retry: the run re-runs up() of this file (migrate-mongo files run whole)" if cls is TransientError
              else None)
