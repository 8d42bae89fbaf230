"""Constraints validated in the same breath as they are added: a full scan under a strong lock."""

from __future__ import annotations

from pglast import ast

from polymigrate.lint.pgast import AT, CT, alter_cmds, constraints, is_new_table, qualified
from polymigrate.lint.rule import Hit, Rule


def _added(src):
    """(statement, table, constraint) for every constraint added to an existing table."""
    for s, alter, cmd in alter_cmds(src):
        if is_new_table(src, s, alter.relation):
            continue
        if cmd.subtype == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
            yield s, alter.relation, cmd.def_
        elif cmd.subtype == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            for c in constraints(cmd.def_):
                yield s, alter.relation, c


def _not_valid(src):
    added_not_valid = set()
    for s, rel, c in _added(src):
        if c.contype in (CT.CONSTR_CHECK, CT.CONSTR_FOREIGN) and not c.skip_validation:
            kind = "CHECK" if c.contype == CT.CONSTR_CHECK else "FOREIGN KEY"
            yield Hit.at(s, f"{kind} {c.conname or ''} on {qualified(rel)} is validated while the lock is held: "
                            "a full scan that blocks writes".replace("  ", " "))
        elif c.skip_validation and c.conname:
            added_not_valid.add((rel.relname, c.conname))
    if not src.in_transaction:
        return
    # in one transaction the ADD … NOT VALID lock is still held when VALIDATE scans: nothing gained
    for s, alter, cmd in alter_cmds(src):
        if cmd.subtype == AT.AT_ValidateConstraint and (alter.relation.relname, cmd.name) in added_not_valid:
            yield Hit.at(s, f"VALIDATE CONSTRAINT {cmd.name} runs in the same transaction as its ADD … NOT VALID, "
                            "so the scan still happens under the ADD's lock",
                         fix="move VALIDATE CONSTRAINT (and what depends on it) to the next migration file")


def _foreign_key(src):
    for s, rel, c in _added(src):
        if c.contype == CT.CONSTR_FOREIGN and not c.skip_validation:
            yield Hit.at(s, f"FOREIGN KEY from {qualified(rel)} to {qualified(c.pktable)} takes SHARE ROW EXCLUSIVE "
                            "on both tables and scans the referencing one")


def _unique(src):
    for s, rel, c in _added(src):
        if c.contype == CT.CONSTR_UNIQUE and not c.indexname:
            yield Hit.at(s, f"UNIQUE on {qualified(rel)} builds its index under ACCESS EXCLUSIVE: reads and writes wait")


RULES = (
    Rule("constraint-missing-not-valid", "postgresql", "medium",
         "a CHECK or FOREIGN KEY added without NOT VALID scans the table while blocking writes",
         "ADD CONSTRAINT … NOT VALID in one migration, VALIDATE CONSTRAINT … (SHARE UPDATE EXCLUSIVE) in the next",
         _not_valid, impact=True, squawk=True),
    Rule("adding-foreign-key-constraint", "postgresql", "medium",
         "adding a foreign key locks both tables against writes during validation",
         "ADD CONSTRAINT fk FOREIGN KEY … NOT VALID; then ALTER TABLE … VALIDATE CONSTRAINT fk in a later migration",
         _foreign_key, impact=True, squawk=True),
    Rule("disallowed-unique-constraint", "postgresql", "medium",
         "ADD CONSTRAINT … UNIQUE builds its index under ACCESS EXCLUSIVE",
         "CREATE UNIQUE INDEX CONCURRENTLY i ON t (col); then ADD CONSTRAINT u UNIQUE USING INDEX i",
         _unique, impact=True, squawk=True),
)
