"""MongoDB pieces that need no server: what FerretDB lacks, error classes, file formats."""

from __future__ import annotations

import pytest
from pymongo import errors as perr

from polymigrate.adapters.mongodb.server import ServerInfo, classify, unsupported
from polymigrate.catalog import load_file
from polymigrate.errors import PermanentError, TransientError
from polymigrate.spec import formats

FERRET = ServerInfo(version="7.0.42", ferretdb_version="v1.24.2", address="127.0.0.1:27018")
MONGO = ServerInfo(version="7.0.14", address="db:27017")


@pytest.mark.parametrize("cmd, lacks", [
    ({"collMod": "posts", "validator": {}}, "`collMod`"),
    ({"create": "posts", "validator": {"$jsonSchema": {}}}, "`create` with `validator`"),
    ({"create": "ev", "timeseries": {"timeField": "at"}}, "`create` with `timeseries`"),
    ({"createIndexes": "a", "indexes": [{"key": {"at": 1}, "name": "t", "expireAfterSeconds": 5}]}, "TTL"),
    ({"createIndexes": "a", "indexes": [{"key": {"x": 1}, "name": "p", "partialFilterExpression": {}}]}, "partial"),
    ({"createIndexes": "a", "indexes": [{"key": {"loc": "2dsphere"}, "name": "g"}]}, "'2dsphere'"),
    ({"createIndexes": "a", "indexes": [{"key": {"e": 1}, "name": "e", "unique": True, "sparse": True}]}, "sparse"),
    ({"update": "a", "updates": [{"q": {}, "u": [{"$set": {"x": 1}}], "multi": True}]}, "pipeline"),
    ({"update": "a", "updates": [{"q": {}, "u": {"$set": {"a.$[e]": 1}}, "arrayFilters": [{}]}]}, "arrayFilters"),
    ({"update": "a", "updates": [{"q": {"_id": i}, "u": {"$set": {"x": 1}}} for i in range(60)]}, "60 single-document"),
    ({"aggregate": "a", "pipeline": [{"$match": {}}, {"$lookup": {}}], "cursor": {}}, "$lookup"),
    ({"renameCollection": "db1.a", "to": "db2.a"}, "across databases"),
])
def test_what_ferretdb_lacks_is_found_before_running(cmd, lacks):
    assert lacks in (unsupported(cmd, FERRET) or "")
    assert unsupported(cmd, MONGO) is None  # a real MongoDB runs all of them


@pytest.mark.parametrize("cmd", [
    {"create": "posts"}, {"createIndexes": "a", "indexes": [{"key": {"a": 1, "b": -1}, "name": "ab", "unique": True}]},
    {"update": "a", "updates": [{"q": {"_id": i}, "u": {"$set": {"x": 1}}, "multi": True} for i in range(60)]},
    {"renameCollection": "db1.a", "to": "db1.b"}, {"dropIndexes": "a", "index": "x"},
])
def test_what_ferretdb_runs_passes(cmd):
    assert unsupported(cmd, FERRET) is None


def test_errors_are_classified():
    assert isinstance(classify(perr.AutoReconnect("connection reset")), TransientError)
    assert isinstance(classify(perr.NotPrimaryError("not primary", {"code": 10107})), TransientError)
    assert isinstance(classify(perr.OperationFailure("database is locked (5) (SQLITE_BUSY)", 1)), TransientError)
    dup = classify(perr.OperationFailure("E11000 duplicate key", 11000, {"errmsg": "E11000 duplicate key", "code": 11000}),
                   file="x.json", line=4)
    assert type(dup) is PermanentError and str(dup).startswith("x.json:4:") and "unique index" in dup.hint
    lacking = classify(perr.OperationFailure("`collMod` command is not implemented yet", 238,
                                             {"errmsg": "`collMod` command is not implemented yet", "code": 238}),
                       server=FERRET)
    assert type(lacking) is PermanentError and "not supported by FerretDB 1.24.2 (MongoDB protocol) at 127.0.0.1:27018" in str(lacking)


@pytest.mark.parametrize("errmsg, code, name", [
    ("context canceled", 1, "InternalError"),                    # FerretDB stopped mid-command (issue 28)
    ("context deadline exceeded", 1, "InternalError"),
    ("The server is in quiesce mode and will shut down", 91, "ShutdownInProgress"),
    ("interrupted at shutdown", 11600, "InterruptedAtShutdown"),
    ("operation was interrupted because a client disconnected", 279, "ClientDisconnect"),
])
def test_a_server_shutting_down_or_a_cancelled_context_is_transient_on_every_mongodb_protocol_server(errmsg, code, name):
    """The reply as the server sends it ({ok: 0, errmsg, code, codeName}): a retry after the server is
    back resumes from the ledger, so Airflow must retry it, not fail at once."""
    exc = perr.OperationFailure(errmsg, code, {"ok": 0, "errmsg": errmsg, "code": code, "codeName": name})
    assert isinstance(classify(exc), TransientError), errmsg


def test_an_internal_error_that_is_not_a_shutdown_stays_permanent():
    exc = perr.OperationFailure("invalid $inc value", 1, {"ok": 0, "errmsg": "invalid $inc value", "code": 1,
                                                         "codeName": "InternalError"})
    assert not isinstance(classify(exc), TransientError)


def test_json_files_may_carry_down_and_js_files_are_never_rendered(tmp_path):
    assert formats.check("mongodb", '{"commands": [{"create": "a"}], "down": [{"drop": "a"}]}') is None
    assert "command 1 is empty" in str(formats.check("mongodb", '{"commands": [{"create": "a"}], "down": [{}]}'))
    (tmp_path / "1-tiers.js").write_text("module.exports = { async up(db) { console.log(`tier ${name}`); } };\n")
    m, problems, _ = load_file("shop", "mongodb", tmp_path, tmp_path / "1-tiers.js")
    assert not problems and m.render({}) == m.text  # ${name} is JavaScript, not a placeholder


def test_the_node_runner_and_the_repository_root_are_found_from_the_mongodb_package():
    from polymigrate.adapters.mongodb import js

    assert js.RUNNER.is_file()
    assert (js._REPO / "pyproject.toml").is_file() and (js._REPO / "include" / "polymigrate").is_dir()
