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
    """Tables created earlier in the same file (CREATE [TEMP] TABLE, CREATE TABLE … AS, SELECT … INTO):
    changing them locks nothing anyone else uses."""
    limit = before.index if before is not None else len(source.statements)
    return {name for name, i in source.facts.created_tables.items() if i < limit}


def is_new_table(source: Source, stmt: Statement, rel) -> bool:
    """``rel`` was created by an earlier statement of the same file (one lookup: lint stays linear)."""
    if rel is None:
        return False
    created = source.facts.created_tables.get(rel.relname)
    return created is not None and created < stmt.index


def is_new_index(source: Source, stmt: Statement, name: str | None) -> bool:
    created = source.facts.created_indexes.get(name or "")
    return created is not None and created < stmt.index


_CANON = {"character varying": "varchar", "bit varying": "varbit", "character": "bpchar", "int4": "integer",
          "int8": "bigint", "int2": "smallint"}
_WIDENABLE = {"varchar", "varbit", "numeric", "text"}


def canon_type(name: str, mods: tuple[int, ...] = ()) -> tuple[str, tuple[int, ...]]:
    return _CANON.get(name, name), tuple(mods)


def widens(old: tuple[str, tuple[int, ...]], new: tuple[str, tuple[int, ...]]) -> bool:
    """True when changing a column from ``old`` to ``new`` only changes the catalog (PostgreSQL 9.2+):
    varchar/varbit to a larger or no limit, varchar to text, numeric to more precision at the same scale."""
    (o, om), (n, nm) = canon_type(*old), canon_type(*new)
    if o == "varchar" and n == "text":
        return True
    if o != n:
        return False
    if o in ("varchar", "varbit"):
        return not nm or (bool(om) and nm[0] >= om[0])
    if o == "numeric":
        if not nm:
            return True
        if not om:
            return False
        return nm[0] >= om[0] and (nm[1] if len(nm) > 1 else 0) == (om[1] if len(om) > 1 else 0)
    return om == nm  # the same type: nothing to convert


def type_change(source: Source, stmt: Statement, table: str, column: str,
                new: tuple[str, tuple[int, ...]]) -> str:
    """What ALTER … TYPE ``new`` does to a column of an existing table, as far as the change set tells:
    ``metadata`` (a widening of a column it defined), ``rewrite``, or ``maybe`` (only the target knows)."""
    old = source.facts.type_before.get((stmt.index, table, column))
    if old is not None:
        return "metadata" if widens(old, new) else "rewrite"
    return "maybe" if canon_type(*new)[0] in _WIDENABLE else "rewrite"


def dropped_relations(node) -> list:
    """RangeVars of what a DROP names (tables, indexes, views)."""
    out = []
    for obj in node.objects or ():
        names = [x.sval for x in obj] if isinstance(obj, tuple) else []
        if names:
            out.append(ast.RangeVar(schemaname=names[-2] if len(names) > 1 else None, relname=names[-1]))
    return out
