"""Security checks: secrets in files, injectable dynamic SQL, PUBLIC grants, disabled RLS."""

from __future__ import annotations

import re

from pglast import ast, enums

from polymigrate.lint.pgast import AT, alter_cmds, qualified
from polymigrate.lint.rule import Hit, Rule
from polymigrate.secrets import TOKENS, URL_WITH_PASSWORD

# Each pattern names what it found; values themselves are never copied into a finding.
_SECRETS = (
    ("a PASSWORD literal", re.compile(r"\bPASSWORD\s+'(?!\$\{)[^']+'", re.I)),
    ("a credential assignment", re.compile(
        r"""(?i)\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?key|auth[_-]?token|token)\b["']?\s*[:=]\s*["'](?!\$\{)[^"'\s]{6,}["']""")),
    ("a URL with a password", URL_WITH_PASSWORD),
    *TOKENS,  # the same credential shapes the spec loader rejects (polymigrate.secrets)
)


def _secrets(src):
    text = src.migration.text  # unrendered: ${placeholders} are how values get in safely
    for what, pattern in _SECRETS:
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            yield Hit(line, f"line {line}: <redacted>", f"{what} is written in the migration file")


_EXECUTE_CONCAT = re.compile(r"\bEXECUTE\b(?:(?!;).)*?(?:\|\||\bformat\s*\([^;]*%s)", re.I | re.S)


def _dynamic_sql(src):
    for s in src.statements:
        if not isinstance(s.node, (ast.CreateFunctionStmt, ast.DoStmt)):
            continue
        for m in _EXECUTE_CONCAT.finditer(s.text):
            line = s.line + s.text.count("\n", 0, m.start())
            if "||" in m.group(0):
                yield Hit(line, " ".join(m.group(0).split())[:160],
                          "EXECUTE builds SQL by concatenation: a value containing a quote changes the statement")
            else:  # %s is safe only for arguments that quote themselves (regclass); a reviewer must say so
                yield Hit(line, " ".join(m.group(0).split())[:160],
                          "EXECUTE format() with %s inserts the value unquoted", severity="medium")


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
         "EXECUTE format('… %I … %L', ident, value) or EXECUTE '… $1' USING value", _dynamic_sql),
    Rule("grant-to-public", "postgresql", "high", "GRANT … TO PUBLIC reaches every role",
         "grant to the application role (e.g. TO ${app_role})", _grant_public),
    Rule("disable-row-level-security", "postgresql", "high", "disabling RLS exposes every row to every role",
         "keep RLS enabled and add a policy for the role that needs access", _rls),
)
