"""How ``MongoAdapter`` runs each kind of file: ``.json`` database commands (counted, so a retry
continues after the last one done), ``.py`` modules (``up(db, ctx)``, the transform) and ``.js``
migrate-mongo files through Node; a mixin of the adapter, reading its ``db``, ``ledger`` and lease."""

from __future__ import annotations

import inspect
import logging
import traceback
import types

from bson import json_util
from pymongo import errors as perr

from polymigrate.adapters.mongodb import DESCRIPTOR
from polymigrate.adapters.mongodb.lease import Lease
from polymigrate.adapters.mongodb.server import classify, not_supported_error, unsupported
from polymigrate.adapters.mongodb.transform import MigrationContext
from polymigrate.catalog import Migration
from polymigrate.errors import PermanentError, Problem, SpecError
from polymigrate.ledger import RunContext
from polymigrate.lint.jsonlines import item_lines
from polymigrate.spec import formats

log = logging.getLogger("polymigrate.mongo")

# A resumed command that already took effect before the kill: the error it now gets means "done".
_DONE_ON_RESUME = {"create": (48,), "createIndexes": (85, 86), "dropIndexes": (27,), "drop": (26,),
                   "renameCollection": (26,)}


class MongoRunner:
    """Part of ``MongoAdapter``: the runner of each file type (called by ``apply`` and ``undo``)."""

    # -- .json ------------------------------------------------------------------------------

    def _commands(self, m: Migration, body: str, direction: str) -> list[tuple[int, dict]]:
        try:
            formats.parse("mongodb", body)
        except formats.FormatError as exc:
            raise SpecError([Problem(str(m.path), f"not a valid MongoDB migration: {exc}", line=exc.line,
                                     hint="see docs/mongodb.md for the format")]) from None
        data = json_util.loads(body)
        key = "commands" if direction == "up" else "down"
        cmds = [c for c in (data.get(key) or []) if isinstance(c, dict)]
        start = body.find(f'"{key}"')
        offset = body.count("\n", 0, start) if start >= 0 else 0
        lines = item_lines(body[max(start, 0):], [next(iter(c)) for c in cmds])
        return [(offset + ln, self._qualify(c)) for ln, c in zip(lines, cmds)]

    def _qualify(self, cmd: dict) -> dict:
        """``renameCollection`` takes full names and runs on admin: a short name means this database."""
        if next(iter(cmd), None) == "renameCollection":
            cmd = dict(cmd)
            for k in ("renameCollection", "to"):
                if isinstance(cmd.get(k), str) and "." not in cmd[k]:
                    cmd[k] = f"{self.db.name}.{cmd[k]}"
        return cmd

    def _run_json(self, m: Migration, body: str, direction: str, progress: dict, checkpoint, lease: Lease,
                  resumed: bool) -> dict:
        commands = self._commands(m, body, direction)
        if not commands:
            raise PermanentError(f"{m.script} has no {'commands' if direction == 'up' else 'down'} to run", file=m.path,
                                 hint='add "down": [<commands that revert it>] to make it reversible'
                                 if direction != "up" else None)
        done = int(progress.get("commands_done", 0))
        for i in range(done, len(commands)):
            line, cmd = commands[i]
            name = next(iter(cmd))
            statement = json_util.dumps(cmd)[:300]
            what = unsupported(cmd, self.server, database=self.db.name)
            self._refused_first = i == 0
            if what:
                raise not_supported_error(what, self.server, file=m.path, line=line, statement=statement)
            lease.assert_held(f"command {i + 1} of {m.script}")
            target = self.client.admin if name == "renameCollection" else self.db
            try:
                reply = target.command(cmd)  # an error reply (ok: 0) did nothing; a write error may follow writes
                self._refused_first = False
                _raise_write_errors(reply)
            except perr.OperationFailure as exc:
                if not (resumed and i == done and exc.code in _DONE_ON_RESUME.get(name, ())):
                    raise classify(exc, server=self.server, file=m.path, line=line, statement=statement,
                                   what=f"command {i + 1} of {len(commands)} ({name}) failed ({i} done"
                                        f"{'' if i == 0 else ' and recorded'}; a retry resumes at command {i + 1})") from exc
                log.info("%s: command %d (%s) had already taken effect before the interruption", m.script, i + 1, name)
            checkpoint({"commands_done": i + 1, "commands": len(commands)})
        return {"steps": len(commands) - done, "resumed_at": done + 1 if done else None}

    # -- .py --------------------------------------------------------------------------------

    def _module(self, m: Migration, body: str) -> types.ModuleType:
        key = (str(m.path), body)
        if key in self._modules:
            return self._modules[key]
        try:
            code = compile(body, str(m.path), "exec")
        except SyntaxError as exc:
            raise SpecError([Problem(str(m.path), f"Python syntax error: {exc.msg}", line=exc.lineno,
                                     hint="fix the file")]) from None
        module = types.ModuleType(f"polymigrate_mongo_{m.domain}_{m.version}".replace(".", "_").replace("-", "_"))
        module.__file__ = str(m.path)
        try:
            exec(code, module.__dict__)  # noqa: S102  a migration file of the spec tree, reviewed like code
        except ImportError as exc:
            raise SpecError([Problem(str(m.path), f"cannot import {exc.name or exc}: {exc}",
                                     line=_line_in(exc, m)[0], hint="pip install it where polymigrate runs")]) from None
        except Exception as exc:  # noqa: BLE001
            raise SpecError([Problem(str(m.path), f"{type(exc).__name__} while loading: {exc}",
                                     line=_line_in(exc, m)[0])]) from None
        self._modules[key] = module
        return module

    def _run_py(self, m: Migration, body: str, ctx: RunContext, direction: str, row: dict, progress: dict,
                checkpoint, lease: Lease, resumed: bool) -> dict:
        fn = getattr(self._module(m, body), direction, None)
        if not callable(fn):
            raise PermanentError(f"{m.script} defines no {direction}()", file=m.path,
                                 hint=f"add def {direction}(db, ctx): …")
        d = m.directives
        mctx = MigrationContext(
            db=self.db, client=self.client, server=self.server, migration=m, direction=direction,
            attempt=str(row.get("attempt") or row["_id"]), progress=dict(progress.get("transforms") or {}),
            checkpoint=lambda name, state: checkpoint({f"transforms.{name}": state}),
            assert_held=lease.assert_held, placeholders=ctx.placeholders,
            batch_size=d.batch_size or getattr(self.settings, "batch_size", None),
            pause_ms=d.pause_ms if d.pause_ms is not None else getattr(self.settings, "pause_ms", None),
            resumed=resumed)
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(params) >= 2:
            fn(self.db, mctx)
        else:
            fn(self.db)
        return {"steps": max(len(mctx.results), 1),
                "transforms": {r.name: {"processed": r.processed, "batches": r.batches} for r in mctx.results}}

    def _node_url(self) -> str:
        if self._url:
            return self._url
        host, port = self.client.address or ("localhost", DESCRIPTOR.default_port)
        log.warning("no connection URL for the Node runner: connecting to %s:%s without credentials or TLS "
                    "(build the adapter from a URL or a MongoConnection to pass them)", host, port)
        return f"mongodb://{host}:{port}/?directConnection=true"


def _raise_write_errors(reply: dict) -> None:
    """``insert``/``update``/``delete`` commands report failed writes inside an ``ok: 1`` reply."""
    errors = reply.get("writeErrors") or []
    if errors:
        e = errors[0]
        raise perr.OperationFailure(f"{e.get('errmsg')} (write {e.get('index')}; {len(errors)} write error(s))",
                                    e.get("code"), reply)
    wce = reply.get("writeConcernError")
    if wce:
        raise perr.OperationFailure(f"write concern: {wce.get('errmsg')}", wce.get("code"), reply)


def _line_in(exc: BaseException, m: Migration) -> tuple[int | None, str | None]:
    """The line of the migration file where ``exc`` was raised (innermost frame in that file)."""
    found = (None, None)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == str(m.path):
            found = (frame.lineno, frame.line)
    if found[0] is None and isinstance(exc, SyntaxError) and exc.filename == str(m.path):
        return exc.lineno, exc.text
    return found
