"""Redis Lua scripts: one call must never block the server for long, and must work on a cluster.

polymigrate calls a script with ``ARGV[1]`` = SCAN cursor and ``ARGV[2]`` = batch size, and calls
again with the cursor the script returns until it is ``"0"`` (the cursor protocol).
"""

from __future__ import annotations

import re

from polymigrate.lint.rule import Hit, Rule

_CALL_ARGS = r"\s*\(\s*['\"](?P<cmd>[A-Za-z]+)['\"]\s*(?P<args>[^)]*)\)"
_CALL = re.compile(r"redis\.p?call" + _CALL_ARGS, re.S)
# `local rcall = redis.call` (or pcall): later `rcall('KEYS', …)` is the same call under another name
_ALIAS = re.compile(r"(?<![\w.])(?:local\s+)?(?P<name>[A-Za-z_]\w*)\s*=\s*redis\.p?call\b(?!\s*\()")
_LOOP_TO_ZERO = re.compile(r"\b(?:until|while)\b[^\n]*(?:~=|==)\s*['\"]?0['\"]?", re.S)
_MULTI_KEY = {"RENAME": 2, "RENAMENX": 2, "COPY": 2, "SMOVE": 2, "LMOVE": 2, "RPOPLPUSH": 2, "BLMOVE": 2,
              "SUNIONSTORE": 0, "SINTERSTORE": 0, "SDIFFSTORE": 0, "ZUNIONSTORE": 0, "ZINTERSTORE": 0,
              "MSET": 0, "MGET": 0, "DEL": 0, "UNLINK": 0}


def _call_pattern(src) -> re.Pattern:
    """``redis.call(…)``/``redis.pcall(…)`` and every local alias the script gives them (cached per file)."""
    pattern = src.state.get(("redis-call", src.file))
    if pattern is None:
        aliases = sorted({m.group("name") for m in _ALIAS.finditer(src.text)})
        if aliases:
            names = "|".join(re.escape(a) for a in aliases)
            pattern = re.compile(rf"(?:redis\.p?call|(?<![\w.])(?:{names}))" + _CALL_ARGS, re.S)
        else:
            pattern = _CALL
        src.state[("redis-call", src.file)] = pattern
    return pattern


def _calls(src, name: str | None = None):
    for m in _call_pattern(src).finditer(src.text):
        if name is None or m.group("cmd").upper() == name:
            yield m, src.line_of(m.start()), " ".join(m.group(0).split())[:160]


def _args(m) -> list[str]:
    return [a.strip() for a in m.group("args").lstrip(",").split(",") if a.strip()]


def _keys(src):
    for m, line, text in _calls(src, "KEYS"):
        yield Hit(line, text, "KEYS walks the whole keyspace in one call and blocks every other client")


def _keyspace_loop(src):
    scans = list(_calls(src, "SCAN"))
    if scans and _LOOP_TO_ZERO.search(src.text):
        m, line, text = scans[0]
        yield Hit(line, text, "SCAN loops until the cursor is 0 inside one script call: the whole keyspace in one "
                              "blocking call")


def _cursor(src):
    for m, line, text in _calls(src, "SCAN"):
        args = _args(m)
        cursor = args[0] if args else ""
        if cursor.startswith("ARGV["):
            continue
        if re.match(r"^[A-Za-z_]\w*$", cursor) and re.search(rf"\b{cursor}\s*=\s*(?:tonumber\()?ARGV\[", src.text):
            continue
        yield Hit(line, text, f"SCAN starts from {cursor or 'nothing'} instead of the cursor polymigrate passes in "
                              "ARGV[1]: each call restarts or the script must finish the keyspace in one go")


def _cross_slot(src):
    for m, line, text in _calls(src):
        cmd = m.group("cmd").upper()
        if cmd not in _MULTI_KEY:
            continue
        args = _args(m)
        keys = args[: _MULTI_KEY[cmd]] if _MULTI_KEY[cmd] else args
        if cmd == "MSET":
            keys = args[::2]
        if len(keys) < 2 or all(k.startswith("KEYS[") for k in keys):
            continue
        if not all("{" in k for k in keys):
            yield Hit(line, text, f"{cmd} over keys built in the script without a common {{hash tag}}: on Redis "
                                  "Cluster they live in different slots and the call fails with CROSSSLOT")


RULES = (
    Rule("redis-keys-command", "redis", "high", "KEYS blocks the server while it walks every key",
         "SCAN with the cursor protocol: local res = redis.call('SCAN', ARGV[1], 'MATCH', p, 'COUNT', ARGV[2]); "
         "return {res[1], n}", _keys),
    Rule("redis-whole-keyspace-loop", "redis", "high", "a SCAN loop inside one call still blocks until it ends",
         "do one SCAN batch per call and return the next cursor; polymigrate calls again until it is \"0\"",
         _keyspace_loop),
    Rule("redis-missing-cursor-protocol", "redis", "medium",
         "the script ignores the cursor polymigrate passes (ARGV[1])",
         "start SCAN from ARGV[1] and return {next_cursor, processed}", _cursor),
    Rule("redis-cross-slot-keys", "redis", "medium", "multi-key commands over keys in different cluster slots",
         "give related keys a common hash tag, e.g. 'user:{' .. id .. '}:profile' → 'user_profile:{' .. id .. '}'",
         _cross_slot),
)
