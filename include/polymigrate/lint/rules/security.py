"""Security checks: secrets in files, injectable dynamic SQL, PUBLIC grants, disabled RLS."""

from __future__ import annotations

import re

from pglast import ast, enums

from polymigrate.lint.pgast import AT, alter_cmds, qualified
from polymigrate.lint.rule import Hit, Rule
from polymigrate.credential_patterns import TOKENS, URL_WITH_PASSWORD

# Each pattern names what it found; values themselves are never copied into a finding.
_SECRETS = (
    ("a PASSWORD literal", re.compile(r"\bPASSWORD\s+'(?!\$\{)[^']+'", re.I)),
    ("a credential assignment", re.compile(
        r"""(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|auth[_-]?token|token)\b["']?\s*[:=]\s*["'](?!\$\{)[^"'\s]{6,}["']""")),
    ("a URL with a password", URL_WITH_PASSWORD),
    *TOKENS,  # the same credential shapes the spec loader rejects (polymigrate.credential_patterns)
)


def _secrets(src):
    text = src.migration.text  # unrendered: ${placeholders} are how values get in safely
    for what, pattern in _SECRETS:
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            yield Hit(line, f"line {line}: <redacted>", f"{what} is written in the migration file")


_EXECUTE = re.compile(r"\bEXECUTE\b(?!\s+(?:FUNCTION|PROCEDURE)\b)", re.I)  # not CREATE TRIGGER's EXECUTE FUNCTION
_FORMAT_CALL = re.compile(r"\bformat\s*\(", re.I)
# Types whose text form is already a correctly quoted (schema-qualified when needed) name: under %s
# they cannot change the statement, which is why PostgreSQL's documentation formats regclass with %s.
_SELF_QUOTING = ("regclass", "regtype", "regproc", "regprocedure", "regoper", "regoperator", "regnamespace",
                 "regrole", "regconfig", "regdictionary", "regcollation")
_SELF_QUOTING_CAST = re.compile(r"::\s*(?:pg_catalog\.)?(?:%s)\s*$" % "|".join(_SELF_QUOTING), re.I)
_QUOTING_CALL = re.compile(r"^(?:pg_catalog\.)?(?:quote_ident|quote_literal|quote_nullable)\s*\(.*\)$", re.I | re.S)
_CONSTANT = re.compile(r"^(?:[+-]?\d+(?:\.\d+)?|'(?:[^']|'')*')$", re.S)
_DECLARED = re.compile(r"^\s*(\w+)\s+(?:CONSTANT\s+)?(?:pg_catalog\.)?(%s)\b" % "|".join(_SELF_QUOTING), re.I | re.M)
_SPEC = re.compile(r"%(?:(\d+)\$)?([-]?)(\d*|\*(?:\d+\$)?)([sIL%])")


def _self_quoting_names(stmt) -> set[str]:
    """Parameters and DECLAREd variables of a reg* type in a function or DO block."""
    names = set()
    for param in getattr(stmt.node, "parameters", None) or ():
        type_name = param.argType.names[-1].sval.lower() if param.argType and param.argType.names else ""
        if param.name and type_name in _SELF_QUOTING:
            names.add(param.name.lower())
    names.update(m.group(1).lower() for m in _DECLARED.finditer(stmt.text))
    return names


def _scan(text: str, start: int, stop: str) -> int:
    """Index of the first ``stop`` character at depth 0 from ``start``, outside quotes (len(text) if none)."""
    depth, i, quoted = 0, start, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "'":
                if text[i + 1:i + 2] == "'":
                    i += 1
                else:
                    quoted = False
        elif c == "'":
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")":
            if depth == 0 and ")" in stop:
                return i
            depth -= 1
        elif c in stop and depth == 0:
            return i
        i += 1
    return len(text)


def _arguments(text: str, open_paren: int) -> tuple[list[str], int]:
    """The top-level arguments of the call whose '(' is at ``open_paren``, and the index of its ')'."""
    args, i = [], open_paren + 1
    while True:
        end = _scan(text, i, ",)")
        args.append(text[i:end].strip())
        if end >= len(text) or text[end] == ")":
            return args, end
        i = end + 1


def _literal(expr: str) -> str | None:
    """The text of a string constant written as one or more adjacent literals, else None."""
    parts = re.findall(r"'((?:[^']|'')*)'", expr)
    rest = re.sub(r"'(?:[^']|'')*'", "", expr)
    if not parts or rest.strip(" \t\r\n|"):
        return None
    return "".join(p.replace("''", "'") for p in parts)


def _unquoted_s_arguments(fmt: str, args: list[str], safe_names: set[str]) -> list[str]:
    """The arguments a format string places with %s that do not quote themselves."""
    unsafe, nxt = [], 1
    for m in _SPEC.finditer(fmt):
        position, _, width, kind = m.groups()
        if kind == "%":
            continue
        if width.startswith("*"):  # the width comes from an argument too
            nxt += 1
        index = int(position) if position else nxt
        nxt = index + 1
        if kind != "s":
            continue
        arg = args[index] if index < len(args) else ""
        plain = arg.strip().lower()
        if not (plain in safe_names or _SELF_QUOTING_CAST.search(arg) or _QUOTING_CALL.match(arg.strip())
                or _CONSTANT.match(arg.strip())):
            unsafe.append(arg or f"argument {index}")
    return unsafe


def _dynamic_sql(src):
    for s in src.statements:
        if not isinstance(s.node, (ast.CreateFunctionStmt, ast.DoStmt)):
            continue
        safe_names = None
        for m in _EXECUTE.finditer(s.text):
            end = _scan(s.text, m.end(), ";")
            expr = s.text[m.end():end]
            line = s.line + s.text.count("\n", 0, m.start())
            shown = " ".join(s.text[m.start():end].split())[:160]
            # EXECUTE format(…) is judged by what format() inserts; any other || concatenates
            call = _FORMAT_CALL.match(expr, len(expr) - len(expr.lstrip()))
            if call is None and "||" not in expr:
                call = _FORMAT_CALL.search(expr)
            if call is None:
                if "||" in expr:
                    yield Hit(line, shown, "EXECUTE builds SQL by concatenation: a value containing a quote changes the statement")
                continue
            args, close = _arguments(s.text, m.end() + call.end() - 1)
            if "||" in s.text[close + 1:end]:
                yield Hit(line, shown, "EXECUTE builds SQL by concatenation: a value containing a quote changes the statement")
            fmt = _literal(args[0]) if args else None
            if fmt is None:
                yield Hit(line, shown, f"EXECUTE format() with a format string that is not a constant ({args[0] if args else '?'}): "
                                       "what it inserts unquoted cannot be checked", severity="medium")
                continue
            if safe_names is None:
                safe_names = _self_quoting_names(s)
            unsafe = _unquoted_s_arguments(fmt, args, safe_names)
            if unsafe:
                yield Hit(line, shown, f"EXECUTE format() with %s inserts {', '.join(unsafe)} unquoted "
                                       "(%s is safe only for a regclass or another reg* value, which quotes itself)",
                          severity="medium")


def _public(grants):
    return any(getattr(g, "roletype", None) == enums.RoleSpecType.ROLESPEC_PUBLIC for g in grants or ())


def _grant_public(src):
    for s in src.statements:
        n = s.node
        if isinstance(n, ast.AlterDefaultPrivilegesStmt):
            n = n.action
        if isinstance(n, ast.GrantStmt) and n.is_grant and _public(n.grantees):
            yield Hit.at(s, "grants to PUBLIC: every role, present and future, gets the privilege")


def _rls(src):
    for s, alter, cmd in alter_cmds(src):
        if cmd.subtype in (AT.AT_DisableRowSecurity, AT.AT_NoForceRowSecurity):
            what = "disables" if cmd.subtype == AT.AT_DisableRowSecurity else "stops forcing"
            yield Hit.at(s, f"{what} row level security on {qualified(alter.relation)}: its policies stop applying")


RULES = (
    Rule("secret-in-migration", "any", "critical", "credentials or tokens written into a migration file",
         "remove the value, rotate it, and pass it as a ${placeholder} resolved from the secrets backend",
         _secrets),
    Rule("dynamic-sql-concatenation", "postgresql", "high",
         "EXECUTE with || (or format %s) in a function or DO block is open to SQL injection",
         "EXECUTE format('… %I … %L', ident, value) (or a regclass argument under %s) or EXECUTE '… $1' USING value",
         _dynamic_sql),
    Rule("grant-to-public", "postgresql", "high", "GRANT … TO PUBLIC reaches every role",
         "grant to the application role (e.g. TO ${app_role})", _grant_public),
    Rule("disable-row-level-security", "postgresql", "high", "disabling RLS exposes every row to every role",
         "keep RLS enabled and add a policy for the role that needs access", _rls),
)
