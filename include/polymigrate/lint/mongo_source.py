"""What a MongoDB migration runs, for the lint rules: the ``up`` part only, and the collections it touches.

* ``.json``: the ``commands`` list (never ``down``), with the line of each command;
* ``.py``: the body of ``up`` and of the module's functions it calls (by name, transitively), never
  ``down`` or what only ``down`` uses; comments blanked;
* ``.js`` (migrate-mongo): the same for ``up`` — ``async up(db, client) {…}`` in ``module.exports``,
  ``exports.up = …``, ``export async function up``, ``up: async (db) => {…}`` — found with a scanner that
  knows strings, template literals and comments, so braces inside them do not count.

``runs_text`` returns the file's text with everything ``up`` does not run blanked out (newlines kept,
so offsets and line numbers are the file's own). ``collection_at`` names the collection a call at
an offset writes to, from ``db.collection('x')``, ``db['x']``, ``db.x`` or a variable bound to one.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize

from polymigrate.lint.jsonlines import first_key, item_lines

_JS_UP = re.compile(
    r"(?:\bexports\.up\s*=|\bup\s*:|\bfunction\s+up\b|(?<![\w.])(?:async\s+)?up\s*\((?=[^)]*\)\s*\{)|\b(?:const|let|var)\s+up\s*=)")
_JS_FUNC = re.compile(r"\bfunction\s+(\w+)\s*\(|\b(?:const|let|var)\s+(\w+)\s*=\s*(?:async\s*)?(?:\([^)]*\)|\w+)\s*=>")
_JS_EXPORTS = re.compile(r"\bmodule\.exports\b|\bexports\.up\b|\bexport\s+(?:async\s+)?(?:function|const|let|var)\s+up\b"
                         r"|\bexport\s*\{[^}]*\bup\b|\bexport\s+default\b")


def json_commands(src) -> list[tuple[int, dict]]:
    """(line, command) of a JSON migration's ``commands`` (what ``up`` runs)."""
    data = src.data
    cmds = data.get("commands") if isinstance(data, dict) else data if isinstance(data, list) else None
    if not isinstance(cmds, list):
        return []
    cmds = [c for c in cmds if isinstance(c, dict)]
    return list(zip(item_lines(src.text, [first_key(c) for c in cmds]), cmds))


def _blank(text: str, keep: list[tuple[int, int]]) -> str:
    out = [c if c == "\n" else " " for c in text]
    for a, b in keep:
        out[a:b] = text[a:b]
    return "".join(out)


# --- Python ---------------------------------------------------------------------------------

def _py_runs(text: str) -> tuple[str, bool]:
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text, True
    funcs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    if "up" not in funcs:
        return _blank(text, []), False
    wanted, todo = set(), ["up"]
    while todo:
        name = todo.pop()
        if name in wanted or name not in funcs:
            continue
        wanted.add(name)
        todo += [n.id for n in ast.walk(funcs[name]) if isinstance(n, ast.Name) and n.id in funcs]
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    keep = []
    for name in wanted:
        f = funcs[name]
        first = min([f.lineno] + [d.lineno for d in f.decorator_list])
        keep.append((starts[first - 1], starts[f.end_lineno] if f.end_lineno < len(starts) else len(text)))
    kept = _blank(text, keep)
    return _blank_py_comments(kept), True


def _blank_py_comments(text: str) -> str:
    chars = list(text)
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                a = starts[tok.start[0] - 1] + tok.start[1]
                b = starts[tok.end[0] - 1] + tok.end[1]
                chars[a:b] = " " * (b - a)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return "".join(chars)


# --- JavaScript -----------------------------------------------------------------------------

def _js_scan(text: str) -> tuple[str, dict[int, int]]:
    """The text with comments blanked, and the offset of the ``}`` matching each code ``{`` (braces in
    strings, template literals and comments do not count; ``${…}`` in a template is code)."""
    out = list(text)
    match: dict[int, int] = {}
    stack: list[int] = []
    tpl: list[int] = []  # brace depth at which each open template literal's ${ started
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            out[i:j] = " " * (j - i)
            i = j
            continue
        if c == "/" and nxt == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out[i:j] = [ch if ch == "\n" else " " for ch in text[i:j]]
            i = j
            continue
        if c in "'\"":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            continue
        if c == "`" or (c == "}" and tpl and tpl[-1] == len(stack)):
            if c == "}":
                tpl.pop()
            j = i + 1
            while j < n and text[j] != "`":
                if text[j] == "\\":
                    j += 2
                    continue
                if text[j] == "$" and j + 1 < n and text[j + 1] == "{":
                    tpl.append(len(stack))
                    break
                j += 1
            i = j + (2 if j < n and text[j] == "$" else 1)
            continue
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            match[stack.pop()] = i
        i += 1
    return "".join(out), match


def _js_body(clean: str, match: dict, start: int) -> tuple[int, int] | None:
    """The span of the function that starts at ``start``: its body braces (or an arrow expression)."""
    paren = clean.find("(", start)
    if paren < 0:
        return None
    depth, j = 0, paren
    while j < len(clean):
        if clean[j] == "(":
            depth += 1
        elif clean[j] == ")":
            depth -= 1
            if depth == 0:
                break
        j += 1
    k = j + 1
    while k < len(clean) and clean[k] in " \t\r\n=>":
        k += 1
    if k < len(clean) and clean[k] == "{" and match.get(k, -1) > 0:
        return start, match[k] + 1
    end = clean.find("\n", k)
    return start, len(clean) if end < 0 else end


def _js_runs(text: str) -> tuple[str, bool]:
    clean, match = _js_scan(text)
    m = _JS_UP.search(clean)
    if not m:
        return _blank(clean, []), False
    spans = []
    span = _js_body(clean, match, m.start())
    if span:
        spans.append(span)
    defs = {}
    for d in _JS_FUNC.finditer(clean):
        name = d.group(1) or d.group(2)
        if name and name not in ("up", "down"):
            defs[name] = d.start()
    seen: set[str] = set()
    todo = list(spans)
    while todo:
        a, b = todo.pop()
        for name, at in defs.items():
            if name not in seen and re.search(rf"\b{re.escape(name)}\s*\(", clean[a:b]):
                seen.add(name)
                s = _js_body(clean, match, at)
                if s:
                    spans.append(s)
                    todo.append(s)
    return _blank(clean, spans), True


def runs_text(src) -> tuple[str, bool]:
    """(text with only what ``up`` runs left, whether an ``up`` was found); cached on the source."""
    cached = src.__dict__.get("_mongo_runs")
    if cached is None:
        if src.suffix == ".py":
            cached = _py_runs(src.text)
        elif src.suffix == ".js":
            cached = _js_runs(src.text)
        else:
            cached = (src.text, True)
        src.__dict__["_mongo_runs"] = cached
    return cached


def js_exports_up(text: str) -> bool:
    clean, _ = _js_scan(text)
    return bool(_JS_EXPORTS.search(clean)) and bool(_JS_UP.search(clean))


# --- which collection a call writes to ------------------------------------------------------------

_BIND = re.compile(r"\b(?:const|let|var\s+)?\s*(\w+)\s*=\s*(?:await\s+)?db\s*(?:\.collection\(\s*['\"]([^'\"]+)['\"]"
                   r"|\.get_collection\(\s*['\"]([^'\"]+)['\"]|\[\s*['\"]([^'\"]+)['\"]\s*\]|\.(\w+)\b(?!\s*\())")
_DIRECT = re.compile(r"db\s*(?:\.collection\(\s*['\"]([^'\"]+)['\"]\s*\)|\.get_collection\(\s*['\"]([^'\"]+)['\"]\s*\)"
                     r"|\[\s*['\"]([^'\"]+)['\"]\s*\]|\.(\w+))\s*(?:\.\s*)?$")
_VAR = re.compile(r"(\w+)\s*(?:\.\s*)?$")


def bindings(text: str) -> dict[str, str]:
    out = {}
    for m in _BIND.finditer(text):
        coll = next((g for g in m.groups()[1:] if g), None)
        if coll and coll not in ("command", "collection", "client", "admin"):
            out[m.group(1)] = coll
    return out


def collection_at(text: str, offset: int, binds: dict[str, str]) -> str | None:
    """The collection the method call at ``offset`` (its ``.`` or its name) is made on."""
    before = text[max(0, offset - 200):offset]
    m = _DIRECT.search(before)
    if m:
        return next((g for g in m.groups() if g), None)
    m = _VAR.search(before)
    if m:
        return binds.get(m.group(1))
    return None


def first_arg_is_empty(text: str, offset: int) -> bool:
    """The call at ``offset`` (just after its ``(``) passes ``{}`` as its first argument."""
    return re.match(r"\s*\{\s*\}", text[offset:]) is not None
