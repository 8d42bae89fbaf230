"""Lua migration scripts for Redis: the cursor protocol wrapper, declared KEYS, slots, errors.

The conventions a migration file follows (docs/redis.md has the long version):

* ``KEYS``: the keys listed in header comments ``-- keys: a, b`` (after placeholders). Most
  migrations SCAN and declare none; a script touching fixed keys declares them so a cluster routes
  it to the right node and refuses keys that cross hash slots.
* ``ARGV[1]``: the cursor, ``"0"`` on the first call; ``ARGV[2]``: the batch size;
  ``ARGV[3]``: the domain's ``key_prefix`` (``""`` when none), to prepend to every pattern.
* A script that returns ``{next_cursor, processed}`` (a string or number, then a number) follows the
  cursor protocol and is called again with ``next_cursor`` until it returns ``"0"``. Anything else
  makes it a one-shot script, run once.

The file is not loaded as is: it becomes the body of a local function inside a wrapper, placed on
the file's own first line so Redis' ``user_script:N`` error lines still match the file. The wrapper
recognises the cursor shape and, on a standalone server, records the progress row **in the same
atomic script call** as the batch, after checking that this run still holds the lock lease. So a
run killed at any moment resumes from exactly the last batch that took effect, and a run whose
lease expired cannot write another batch (fencing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from redis import exceptions as rexc
from redis.crc import key_slot

from polymigrate.catalog import Migration
from polymigrate.errors import PermanentError, PolymigrateError, TransientError

CURSOR_MARK = "__polymigrate_cursor"
LEASE_LOST = "polymigrate: lease lost"
_KEYS_LINE = re.compile(r"^\s*--\s*keys:\s*(?P<keys>.*)$", re.IGNORECASE)
_LINE = re.compile(r"user_script:(\d+)")
# Replies that mean "the server cannot serve you right now", not "your script is wrong".
_TRANSIENT_PREFIXES = ("BUSY", "LOADING", "TRYAGAIN", "CLUSTERDOWN", "MASTERDOWN", "READONLY", "NOREPLICAS")


def declared_keys(body: str) -> list[str]:
    """Keys from ``-- keys: a, b`` lines of the header comment (the script's KEYS array)."""
    keys: list[str] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        if not line.lstrip().startswith(("--", "#!")):
            break
        m = _KEYS_LINE.match(line)
        if m:
            keys += [k for k in re.split(r"[,\s]+", m.group("keys").strip()) if k]
    return keys


def check_same_slot(keys: list[str], migration: Migration) -> None:
    """On a cluster every key of one script call must hash to one slot; say which do not."""
    slots: dict[int, list[str]] = {}
    for k in keys:
        slots.setdefault(key_slot(k.encode()), []).append(k)
    if len(slots) > 1:
        listing = "; ".join(f"slot {s}: {', '.join(ks)}" for s, ks in sorted(slots.items()))
        raise PermanentError(
            f"declared KEYS cross hash slots, which a Redis Cluster refuses in one script ({listing})",
            file=migration.path, hint="give the keys a common hash tag, e.g. cart:{42}:items and "
            "cart:{42}:total, or split the migration into one script per slot")


def _lua_string(value: str) -> str:
    """A Lua long-bracket literal that no value can break out of."""
    level = 0
    while f"]{'=' * level}]" in value:
        level += 1
    eq = "=" * level
    return f"[{eq}[{value}]{eq}]"


def wrap(body: str, *, progress_key: str | None, field: str | None, lock_key: str | None,
         token: str | None, budget_us: int = 0) -> str:
    """The script to load: ``body`` as a local function, then the protocol epilogue.

    The epilogue calls the body again with the returned cursor while the call has used less than
    ``budget_us`` microseconds of server time (0: one batch per call), which saves a round trip per
    batch without letting any call block the server for much longer than the budget plus one batch.
    With ``progress_key`` (standalone servers) it first checks the lease (``lock_key`` must still hold
    ``token``) and writes the progress JSON after every batch, in the same atomic call.
    """
    lines = body.split("\n")
    head = 1 if lines and lines[0].startswith("#!") else 0  # a Redis 7 shebang must stay first
    lines[head:head + 1] = ["local function __polymigrate_body() " + (lines[head] if head < len(lines) else "")]
    guard = record = ""
    if progress_key is not None:
        guard = (f"if redis.call('GET', {_lua_string(lock_key or '')}) ~= {_lua_string(token or '')} then "
                 f"return redis.error_reply({_lua_string(LEASE_LOST)}) end\n")
        record = (f"  local pk, pf = {_lua_string(progress_key)}, {_lua_string(field or '')}\n"
                  "  local prev = redis.call('HGET', pk, pf)\n"
                  "  local p = {processed = 0, batches = 0}\n"
                  "  if prev then p = cjson.decode(prev) end\n"
                  "  p.processed = (tonumber(p.processed) or 0) + n\n"
                  "  p.batches = (tonumber(p.batches) or 0) + 1\n"
                  "  p.cursor = nxt\n"
                  "  p.done = (nxt == '0')\n"
                  "  redis.call('HSET', pk, pf, cjson.encode(p))\n")
    epilogue = (
        "\nend\n" + guard +
        f"local budget = {int(budget_us)}\n"
        "local t0 = redis.call('TIME')\n"
        "local total, calls, nxt, n = 0, 0, '0', 0\n"
        "while true do\n"
        "  local res = __polymigrate_body()\n"
        "  if type(res) == 'table' and res.err then return res end\n"  # redis.error_reply: record nothing more
        "  local cursor_shaped = type(res) == 'table' and #res == 2 and type(res[2]) == 'number'"
        " and (type(res[1]) == 'string' or type(res[1]) == 'number')\n"
        "  nxt, n = '0', 0\n"
        "  if cursor_shaped then nxt, n = tostring(res[1]), res[2] end\n"
        + record +
        "  if not cursor_shaped then return res end\n"
        "  total, calls = total + n, calls + 1\n"
        "  if nxt == '0' or budget <= 0 then break end\n"
        "  local t = redis.call('TIME')\n"
        "  if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) >= budget then break end\n"
        "  ARGV[1] = nxt\n"
        "end\n"
        f"return {{'{CURSOR_MARK}', nxt, total, calls}}\n")
    return "\n".join(lines) + epilogue


@dataclass(frozen=True)
class Reply:
    """One script call's outcome: a cursor step, or a one-shot result."""

    cursor: str  # "0" when done (and always for a one-shot script)
    processed: int
    batches: int  # times the body ran in this call
    one_shot: bool


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_reply(raw) -> Reply:
    if isinstance(raw, list) and len(raw) == 4 and text(raw[0]) == CURSOR_MARK:
        return Reply(text(raw[1]), int(raw[2]), int(raw[3]), False)
    return Reply("0", 0, 1, True)


_NEVER_PASSES = tuple(c for c in (getattr(rexc, "AuthenticationError", None), getattr(rexc, "AuthorizationError", None),
                                   getattr(rexc, "AuthenticationWrongNumberOfArgsError", None)) if c)


def is_transient(exc: Exception) -> bool:
    """Connection lost, timeout, or a reply meaning "busy or failing over, try later". A refused
    password or ACL is a ConnectionError to redis-py, but no retry will ever pass it."""
    if _NEVER_PASSES and isinstance(exc, _NEVER_PASSES):
        return False
    if isinstance(exc, (rexc.ConnectionError, rexc.TimeoutError)):  # BusyLoadingError is a ConnectionError
        return True
    return isinstance(exc, rexc.ResponseError) and str(exc).lstrip().startswith(_TRANSIENT_PREFIXES)


def classify(exc: Exception, migration: Migration, body: str) -> PolymigrateError:
    """A redis-py exception as TransientError (retry may help) or PermanentError naming file and line."""
    if isinstance(exc, PolymigrateError):
        return exc
    where = migration.path
    message = " ".join(str(exc).split())
    if is_transient(exc):
        return TransientError(f"Redis cannot serve the migration now: {message}", file=where,
                              hint="retry; the run resumes from the last completed batch")
    if LEASE_LOST in message:
        return TransientError("the migration lock lease expired while running; another run may hold it now",
                              file=where, hint="retry; raise the lease if the server pauses for long")
    m = _LINE.search(message)
    line = int(m.group(1)) if m else None
    lines = body.split("\n")
    if line is not None and line > len(lines):
        line = None  # an error in polymigrate's epilogue, not in the file
    statement = lines[line - 1].strip() if line else None
    hint = ("fix the script and run again; batches that already ran stay applied, so keep it idempotent per key"
            if "compiling" not in message else "fix the Lua syntax; nothing ran")
    return PermanentError(f"Redis rejected the script: {message}", file=where, line=line, statement=statement,
                          hint=hint)
