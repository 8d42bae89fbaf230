"""Small readers over pglast parse trees, shared by the PostgreSQL rules and the risk estimator."""

from __future__ import annotations

from typing import Iterator

from pglast import ast, enums

from polymigrate.lint.source import Source, Statement

AT = enums.AlterTableType
CT = enums.ConstrType

# Functions PostgreSQL marks stable or immutable that people use as defaults: no table rewrite.
NON_VOLATILE_DEFAULTS = frozenset({
    "now", "current_timestamp", "current_date", "current_time", "localtimestamp", "localtime",
    "transaction_timestamp", "statement_timestamp", "current_user", "session_user", "current_schema",
    "to_jsonb", "jsonb_build_object", "json_build_object", "array", "lower", "upper", "coalesce",
    "make_date", "make_timestamp", "make_timestamptz", "to_timestamp", "to_date", "timezone",
})


def qualified(rel) -> str:
    """``schema.table`` of a RangeVar (just ``table`` without a schema)."""
    if rel is None:
        return "?"
    return f"{rel.schemaname}.{rel.relname}" if getattr(rel, "schemaname", None) else rel.relname


def type_name(tn) -> str:
    """The last part of a TypeName, lower case (``pg_catalog.int4`` → ``int4``)."""
    if tn is None or not tn.names:
        return ""
    return tn.names[-1].sval.lower()


def type_text(tn) -> str:
    name = type_name(tn)
    mods = [getattr(getattr(m, "val", None), "ival", None) for m in (tn.typmods or ())] if tn is not None else []
    mods = [str(m) for m in mods if m is not None]
    return name + (f"({', '.join(mods)})" if mods else "")


def alter_cmds(source: Source) -> Iterator[tuple[Statement, ast.AlterTableStmt, ast.AlterTableCmd]]:
    """Every ALTER TABLE sub-command of the file with its statement."""
    for stmt in source.statements:
        if isinstance(stmt.node, ast.AlterTableStmt) and stmt.node.objtype == enums.ObjectType.OBJECT_TABLE:
            for cmd in stmt.node.cmds or ():
                yield stmt, stmt.node, cmd


def column_defs(source: Source) -> Iterator[tuple[Statement, ast.ColumnDef, bool]]:
    """Every column definition: (statement, column, added_to_existing_table)."""
    for stmt in source.statements:
        node = stmt.node
        if isinstance(node, ast.CreateStmt):
            for elt in node.tableElts or ():
                if isinstance(elt, ast.ColumnDef):
                    yield stmt, elt, False
    for stmt, _alter, cmd in alter_cmds(source):
        if cmd.subtype == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            yield stmt, cmd.def_, True


def constraints(col: ast.ColumnDef) -> list[ast.Constraint]:
    return [c for c in (col.constraints or ()) if isinstance(c, ast.Constraint)]


def has_constraint(col: ast.ColumnDef, kind) -> bool:
    return any(c.contype == kind for c in constraints(col))


def default_expr(col: ast.ColumnDef):
    for c in constraints(col):
        if c.contype == CT.CONSTR_DEFAULT:
            return c.raw_expr
    return None


def function_names(node) -> list[str]:
    """Names of every function called anywhere under ``node``."""
    names: list[str] = []

    def walk(n):
        if isinstance(n, ast.FuncCall):
            names.append(n.funcname[-1].sval.lower())
        if isinstance(n, ast.Node):
            for attr in n:
                walk(getattr(n, attr))
        elif isinstance(n, tuple):
            for item in n:
                walk(item)

    walk(node)
    return names


def volatile_functions(expr) -> list[str]:
    return [f for f in function_names(expr) if f not in NON_VOLATILE_DEFAULTS]


def is_stored_generated(col: ast.ColumnDef) -> bool:
    return any(c.contype == CT.CONSTR_GENERATED for c in constraints(col))


SERIAL_TYPES = frozenset({"serial", "serial4", "bigserial", "serial8", "smallserial", "serial2"})


def fills_every_row(col: ast.ColumnDef) -> bool:
    """A serial or identity column: added to a table, it writes a fresh value into every row."""
    return type_name(col.typeName) in SERIAL_TYPES or any(c.contype == CT.CONSTR_IDENTITY for c in constraints(col))


def created_tables(source: Source, before: Statement | None = None) -> set[str]:
    """Tables created earlier in the same file: changing them locks nothing anyone else uses."""
    out = set()
    for stmt in source.statements:
        if before is not None and stmt.index >= before.index:
            break
        if isinstance(stmt.node, ast.CreateStmt):
            out.add(stmt.node.relation.relname)
    return out


def is_new_table(source: Source, stmt: Statement, rel) -> bool:
    return rel is not None and rel.relname in created_tables(source, stmt)
