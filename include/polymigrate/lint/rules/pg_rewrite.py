"""Changes that rewrite or fully scan a table under ACCESS EXCLUSIVE (Atlas's PG30x checks)."""

from __future__ import annotations

from pglast import ast

from polymigrate.lint.pgast import (AT, CT, alter_cmds, column_defs, constraints, default_expr, fills_every_row, has_constraint,
                                    is_new_table, is_stored_generated, qualified, type_change, type_text, volatile_functions)
from polymigrate.lint.source import type_of
from polymigrate.lint.rule import Hit, Rule

_EXPAND_CONTRACT = ("add a new column of the new type, backfill it in batches, switch readers and writers, "
                    "then drop the old column in a later release")


def _type_change(src):
    for s, alter, cmd in alter_cmds(src):
        if cmd.subtype == AT.AT_AlterColumnType and not is_new_table(src, s, alter.relation):
            new = type_text(cmd.def_.typeName) if cmd.def_ else "?"
            verdict = type_change(src, s, alter.relation.relname, cmd.name, type_of(cmd.def_.typeName if cmd.def_ else None))
            if verdict == "metadata":
                continue  # widens a column the change set defined: a catalog change, no rewrite
            if verdict == "maybe":
                yield Hit.at(s, f"{qualified(alter.relation)}.{cmd.name} TYPE {new}: only a catalog change if it widens "
                                "the column (varchar or numeric of the same kind and a smaller or equal limit today), "
                                "otherwise a full rewrite under ACCESS EXCLUSIVE; lint --url with the target checks it",
                             severity="medium")
            else:
                yield Hit.at(s, f"{qualified(alter.relation)}.{cmd.name} TYPE {new} rewrites the table and every index "
                                "under ACCESS EXCLUSIVE: no reads or writes until it finishes")


def _volatile_default(src):
    for s, col, added in column_defs(src):
        if not added or is_new_table(src, s, s.node.relation):
            continue
        if is_stored_generated(col):
            yield Hit.at(s, f"stored generated column {col.colname} rewrites the table under ACCESS EXCLUSIVE")
            continue
        if fills_every_row(col):
            yield Hit.at(s, f"{col.colname} is serial or identity: filling it rewrites every row under ACCESS EXCLUSIVE")
            continue
        expr = default_expr(col)
        funcs = volatile_functions(expr) if expr is not None else []
        if funcs:
            yield Hit.at(s, f"DEFAULT {funcs[0]}() is volatile: adding {col.colname} rewrites every row under "
                            "ACCESS EXCLUSIVE")


def _not_null_checks(src, before: int | None = None):
    """(table, constraint name, column) of CHECK (column IS NOT NULL) constraints, and validated names."""
    checks, validated = set(), set()
    for s, alter, cmd in alter_cmds(src):
        if before is not None and s.index >= before:
            continue
        c = cmd.def_
        if cmd.subtype == AT.AT_AddConstraint and isinstance(c, ast.Constraint) and c.contype == CT.CONSTR_CHECK:
            e = c.raw_expr
            if isinstance(e, ast.NullTest) and isinstance(e.arg, ast.ColumnRef) and e.nulltesttype == 1:  # IS_NOT_NULL
                checks.add((alter.relation.relname, c.conname, e.arg.fields[-1].sval))
        elif cmd.subtype == AT.AT_ValidateConstraint:
            validated.add((alter.relation.relname, cmd.name))
    return checks, validated


def _checked_not_null(src, stmt, table: str, column: str) -> bool:
    """A validated CHECK (column IS NOT NULL) lets SET NOT NULL skip its scan (PostgreSQL 12+).

    The CHECK may come from an earlier migration of the same catalog (the safe pattern spreads ADD …
    NOT VALID and VALIDATE over two files so they do not share a lock), remembered in ``src.state``.
    """
    checks, validated = _not_null_checks(src, before=stmt.index)
    checks |= src.state.get("not_null_checks", set())
    validated |= src.state.get("validated_constraints", set())
    return any(t == table and col == column and (t, name) in validated for t, name, col in checks)


def _set_not_null(src):
    for s, alter, cmd in alter_cmds(src):
        if cmd.subtype == AT.AT_SetNotNull and not is_new_table(src, s, alter.relation) and \
                not _checked_not_null(src, s, alter.relation.relname, cmd.name):
            yield Hit.at(s, f"SET NOT NULL on {qualified(alter.relation)}.{cmd.name} scans the whole table under "
                            "ACCESS EXCLUSIVE")
    checks, validated = _not_null_checks(src)  # for the files after this one
    src.state.setdefault("not_null_checks", set()).update(checks)
    src.state.setdefault("validated_constraints", set()).update(validated)


def _required(src):
    for s, col, added in column_defs(src):
        if not added or is_new_table(src, s, s.node.relation):
            continue
        if has_constraint(col, CT.CONSTR_NOTNULL) and default_expr(col) is None and not is_stored_generated(col) \
                and not has_constraint(col, CT.CONSTR_IDENTITY):
            yield Hit.at(s, f"NOT NULL column {col.colname} without a DEFAULT: fails on a table with rows, and "
                            "breaks inserts of clients that do not know the column")


def _serial_pk(src):
    for s, alter, cmd in alter_cmds(src):
        if is_new_table(src, s, alter.relation):
            continue
        c = cmd.def_
        if cmd.subtype == AT.AT_AddColumn and isinstance(c, ast.ColumnDef) and \
                any(k.contype == CT.CONSTR_PRIMARY for k in constraints(c)):
            yield Hit.at(s, f"adding primary key column {c.colname} fills and indexes it under ACCESS EXCLUSIVE")
        elif cmd.subtype == AT.AT_AddConstraint and isinstance(c, ast.Constraint) and \
                c.contype == CT.CONSTR_PRIMARY and not c.indexname:
            yield Hit.at(s, "ADD PRIMARY KEY builds its index under ACCESS EXCLUSIVE")


RULES = (
    Rule("changing-column-type", "postgresql", "high",
         "ALTER COLUMN TYPE rewrites the table (Atlas: table rewrite) and may break clients",
         _EXPAND_CONTRACT, _type_change, impact=True, squawk=True),
    Rule("adding-field-with-default", "postgresql", "high",
         "a volatile DEFAULT or a stored generated column rewrites the table",
         "add the column without a default (or with a constant), backfill in batches, then SET DEFAULT",
         _volatile_default, impact=True, squawk=True),
    Rule("adding-not-nullable-field", "postgresql", "medium",
         "SET NOT NULL scans the whole table under ACCESS EXCLUSIVE (Atlas: full scan)",
         "ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT c; then SET NOT NULL "
         "(PostgreSQL 12+ skips the scan); DROP CONSTRAINT c", _set_not_null, impact=True, squawk=True),
    Rule("adding-required-field", "postgresql", "high",
         "ADD COLUMN … NOT NULL without a DEFAULT fails on a non-empty table",
         "add it with a constant DEFAULT, or nullable, backfill, then add the NOT NULL the safe way",
         _required, squawk=True, aliases=("adding-not-nullable-column",)),
    Rule("adding-serial-primary-key-field", "postgresql", "medium",
         "adding a primary key builds its unique index under ACCESS EXCLUSIVE",
         "CREATE UNIQUE INDEX CONCURRENTLY i ON t (id); then ALTER TABLE t ADD CONSTRAINT pk PRIMARY KEY USING INDEX i",
         _serial_pk, impact=True, squawk=True),
)
