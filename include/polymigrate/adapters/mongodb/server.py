"""Which server a MongoDB client talks to, what that server cannot do, and how its errors classify.

FerretDB speaks the MongoDB wire protocol but implements less (its 1.x "supported commands"
reference, checked against the server in tests): no ``collMod``, no ``create`` with validators,
views, time series or TTL, no partial/TTL/collation/hidden/text/geo indexes (``sparse`` is accepted
and ignored), no pipeline updates or ``arrayFilters``, no ``$lookup``/``$out``/``$merge``… and no
transactions. ``unsupported`` finds those in a command document before anything runs, so a file
that needs a real MongoDB fails whole, naming the command and the server, instead of half applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pymongo import errors as perr

from polymigrate.errors import MigrationError, PermanentError, TransientError


@dataclass(frozen=True)
class ServerInfo:
    """What ``buildInfo`` says about the server (FerretDB adds ``ferretdbVersion``)."""

    version: str                 # the MongoDB version the server reports (FerretDB: the one it emulates)
    ferretdb_version: str | None = None
    address: str = ""

    @property
    def is_ferretdb(self) -> bool:
        return self.ferretdb_version is not None

    @property
    def label(self) -> str:
        """``FerretDB 1.24.2 (MongoDB protocol)`` or ``MongoDB 7.0.14``: what the test summary and errors show."""
        if self.is_ferretdb:
            return f"FerretDB {self.ferretdb_version.lstrip('v')} (MongoDB protocol)"  # type: ignore[union-attr]
        return f"MongoDB {self.version}"

    def describe(self) -> str:
        return f"{self.label} at {self.address}" if self.address else self.label


def server_info(client: Any) -> ServerInfo:
    """Ask the server (one round trip)."""
    info = client.admin.command("buildInfo")
    address = ""
    try:
        host, port = client.address or ("", None)
        address = f"{host}:{port}" if host else ""
    except (perr.PyMongoError, TypeError, ValueError):
        pass
    return ServerInfo(version=str(info.get("version", "?")), ferretdb_version=info.get("ferretdbVersion"),
                      address=address)


# --- what FerretDB 1.x does not implement -------------------------------------------------------

_FERRET_CREATE = ("validator", "validationLevel", "validationAction", "viewOn", "pipeline", "timeseries",
                  "clusteredIndex", "expireAfterSeconds", "changeStreamPreAndPostImages", "collation",
                  "storageEngine", "indexOptionDefaults", "encryptedFields")
_FERRET_INDEX = {"partialFilterExpression": "a partial index", "expireAfterSeconds": "a TTL index",
                 "collation": "an index collation", "hidden": "a hidden index", "weights": "a text index",
                 "wildcardProjection": "a wildcard index", "2dsphereIndexVersion": "a 2dsphere index"}
_FERRET_STAGES = ("$lookup", "$out", "$merge", "$facet", "$replaceRoot", "$replaceWith", "$graphLookup",
                  "$unionWith", "$setWindowFields", "$densify", "$fill", "$bucketAuto")
FERRET_SINGLE_WRITES = 50
_FERRET_COMMANDS = ("collMod", "applyOps", "commitTransaction", "abortTransaction", "createView",
                    "reIndex", "convertToCapped", "cloneCollectionAsCapped", "shardCollection")


def _index_problem(ix: Any) -> str | None:
    if not isinstance(ix, dict):
        return None
    for option, what in _FERRET_INDEX.items():
        if option in ix:
            return f"`createIndexes` with `{option}` ({what})"
    for field, kind in (ix.get("key") or {}).items():
        if kind not in (1, -1, 1.0, -1.0):
            return f"`createIndexes` with a {kind!r} index on {field!r} (only ascending/descending keys)"
    if ix.get("sparse") and ix.get("unique"):
        return ("`createIndexes` with `sparse` on a unique index (FerretDB ignores `sparse`, so the index "
                "would refuse documents MongoDB accepts)")
    return None


def unsupported(cmd: dict, server: ServerInfo, *, database: str | None = None) -> str | None:
    """What ``server`` lacks to run this command document (``None``: nothing known is missing)."""
    if not server.is_ferretdb or not isinstance(cmd, dict) or not cmd:
        return None
    name = next(iter(cmd))
    if name in _FERRET_COMMANDS:
        return f"`{name}`"
    if name == "create":
        for option in _FERRET_CREATE:
            if option in cmd:
                return f"`create` with `{option}`"
    if name == "createIndexes":
        for ix in cmd.get("indexes") or []:
            problem = _index_problem(ix)
            if problem:
                return problem
    if name in ("update", "findAndModify", "findandmodify"):
        specs = (cmd.get("updates") or []) if name == "update" else [cmd]
        for u in specs:
            if not isinstance(u, dict):
                continue
            if isinstance(u.get("u", u.get("update")), list):
                return f"`{name}` with an aggregation pipeline as the update"
            if "arrayFilters" in u:
                return f"`{name}` with `arrayFilters`"
    if name in ("update", "delete"):
        items = [u for u in cmd.get("updates" if name == "update" else "deletes") or [] if isinstance(u, dict)]
        singles = [u for u in items if (not u.get("multi") if name == "update" else u.get("limit") == 1)]
        if len(singles) > FERRET_SINGLE_WRITES:
            return (f"`{name}` with {len(singles)} single-document statements in one command (FerretDB 1.x holds a "
                    f"connection for each until the command ends and hangs at 100; split it, or use multi)")
    if name == "aggregate":
        for stage in cmd.get("pipeline") or []:
            op = next(iter(stage), "") if isinstance(stage, dict) else ""
            if op in _FERRET_STAGES:
                return f"`aggregate` with the {op} stage"
    if name == "renameCollection":
        source, target = str(cmd.get(name, "")), str(cmd.get("to", ""))
        if source.split(".", 1)[0] != target.split(".", 1)[0]:
            return "`renameCollection` across databases"
    return None


def not_supported_error(what: str, server: ServerInfo, *, file: Any = None, line: int | None = None,
                        statement: str | None = None) -> PermanentError:
    return PermanentError(f"{what} is not supported by {server.describe()}; nothing of this file was run",
                          file=file, line=line, statement=statement,
                          hint="run it against a real MongoDB (docker-compose.yaml's `mongo:7`, MONGO_URI), "
                               "or write the change without it")


# --- error classification --------------------------------------------------------------------

# Server error codes a retry can fix: elections, shutdowns, network, lock contention, stale routing.
TRANSIENT_CODES = frozenset({
    6, 7, 24, 46, 63, 64, 89, 91, 112, 133, 150, 189, 202, 234, 262, 9001, 10107, 11600, 11602, 13388,
    13435, 13436, 43,  # 43 CursorNotFound: a killed or timed-out cursor; the next try reopens it
    279,  # ClientDisconnect
})
_RETRY_LABELS = ("RetryableWriteError", "TransientTransactionError", "ResumableChangeStreamError")
NOT_IMPLEMENTED = (238, 59)  # NotImplemented, CommandNotFound
_INDEX_KIND = re.compile(r"can't find index with key")
_BUSY = re.compile(r"database is locked|SQLITE_BUSY")
# A server stopping under a running command: FerretDB answers InternalError (code 1) "context canceled"
# (its request context ends with the process), others name the shutdown. The server comes back; a retry
# resumes from the ledger (issue 28).
SHUTDOWN = re.compile(r"context canceled|context deadline exceeded|shutdown in progress|shutting down|"
                       r"interrupted at shutdown", re.IGNORECASE)


def code_of(exc: BaseException) -> int | None:
    if isinstance(exc, perr.BulkWriteError):
        errors = (exc.details or {}).get("writeErrors") or []
        if errors:
            return errors[0].get("code")
        wce = (exc.details or {}).get("writeConcernErrors") or []
        return wce[0].get("code") if wce else None
    return getattr(exc, "code", None)


def message_of(exc: BaseException) -> str:
    if isinstance(exc, perr.BulkWriteError):
        errors = (exc.details or {}).get("writeErrors") or (exc.details or {}).get("writeConcernErrors") or []
        if errors:
            e = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            return f"{e.get('errmsg', e)} [code {e.get('code')}]{more}"
    details = getattr(exc, "details", None)
    if isinstance(details, dict) and details.get("errmsg"):
        return f"{details['errmsg']} [code {details.get('code')} {details.get('codeName', '')}]".replace(" ]", "]")
    return str(exc)


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, (perr.AutoReconnect, perr.ConnectionFailure, perr.ServerSelectionTimeoutError,
                        perr.NetworkTimeout, perr.WaitQueueTimeoutError)):
        return True
    if isinstance(exc, perr.PyMongoError) and _BUSY.search(str(exc)):
        return True  # FerretDB on SQLite: another writer held the database past its busy timeout
    if isinstance(exc, perr.PyMongoError) and SHUTDOWN.search(str(exc)):
        return True
    if isinstance(exc, perr.PyMongoError) and any(exc.has_error_label(label) for label in _RETRY_LABELS):
        return True
    return isinstance(exc, perr.OperationFailure) and code_of(exc) in TRANSIENT_CODES


def classify(exc: BaseException, *, server: ServerInfo | None = None, file: Any = None, line: int | None = None,
             statement: str | None = None, what: str | None = None) -> MigrationError:
    """A pymongo error as TransientError (worth a retry) or PermanentError (a person must act)."""
    prefix = f"{what}: " if what else ""
    where = f" on {server.describe()}" if server else ""
    if isinstance(exc, MigrationError):
        return exc
    if is_transient(exc):
        return TransientError(f"{prefix}{type(exc).__name__}{where}: {message_of(exc)}", file=file, line=line,
                              statement=statement, hint="retry: the run resumes from the ledger")
    code = code_of(exc)
    if server is not None and (code in NOT_IMPLEMENTED or (code == 27 and _INDEX_KIND.search(str(exc)))):
        return PermanentError(f"{prefix}not supported by {server.describe()}: {message_of(exc)}", file=file,
                              line=line, statement=statement,
                              hint="run it against a real MongoDB (docker-compose.yaml's `mongo:7`), or write "
                                   "the change without it")
    hint = {11000: "a unique index refuses the duplicate: clean the data first, or change the index",
            121: "the document does not match the collection's validator: fix the data or the validator first",
            13: "the connection's user lacks a privilege this migration needs",
            18: "check the connection's user and password",
            26: "the collection does not exist (check its name and the domain's `mongodb.database`)",
            48: "the collection already exists"}.get(code or -1)
    if isinstance(exc, (perr.ConfigurationError, perr.InvalidURI)):
        hint = "check the MongoDB connection settings"
    return PermanentError(f"{prefix}{message_of(exc)}{where}", file=file, line=line, statement=statement, hint=hint)
