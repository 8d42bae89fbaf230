"""What each PostgreSQL statement does to the tables it touches: lock mode and kind of work.

Lock modes follow the PostgreSQL manual ("Explicit Locking", table-level lock modes); the kind
of work is Atlas's distinction between a metadata change, a full scan, an index build and a
table rewrite. Both feed the lint rules and the impact estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from pglast import ast, enums

from polymigrate.lint.pgast import AT, CT, constraints, default_expr, fills_every_row, is_stored_generated, volatile_functions
from polymigrate.lint.source import Statement, type_of

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
EXCLUSIVE = "EXCLUSIVE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE = "SHARE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"

BLOCKS_READS = {ACCESS_EXCLUSIVE}
BLOCKS_WRITES = {ACCESS_EXCLUSIVE, EXCLUSIVE, SHARE_ROW_EXCLUSIVE, SHARE}
WORK_ORDER = ("none", "metadata", "rows", "scan", "index", "rewrite")
LOCK_ORDER = (None, ROW_EXCLUSIVE, SHARE_UPDATE_EXCLUSIVE, SHARE, SHARE_ROW_EXCLUSIVE, EXCLUSIVE, ACCESS_EXCLUSIVE)


@dataclass(frozen=True)
class Effect:
    """One statement's effect on one relation (``column``/``new_type`` only for type changes)."""

    table: ast.RangeVar | None
    lock: str | None
    work: str
    column: str | None = None
    new_type: str | None = None
    whole_table: bool = True
    new_mods: tuple[int, ...] = ()


def _heavier(a: Effect, b: Effect) -> Effect:
    ka = (LOCK_ORDER.index(a.lock), WORK_ORDER.index(a.work))
    kb = (LOCK_ORDER.index(b.lock), WORK_ORDER.index(b.work))
    return b if kb > ka else a


def _alter_cmd(rel, cmd: ast.AlterTableCmd) -> list[Effect]:
    st = cmd.subtype
    if st == AT.AT_AlterColumnType:
        name, mods = type_of(cmd.def_.typeName) if cmd.def_ else ("", ())
        return [Effect(rel, ACCESS_EXCLUSIVE, "rewrite", cmd.name, name or None, new_mods=mods)]
    if st == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        col = cmd.def_
        expr = default_expr(col)
        if is_stored_generated(col) or fills_every_row(col) or (expr is not None and volatile_functions(expr)):
            return [Effect(rel, ACCESS_EXCLUSIVE, "rewrite")]
        if any(c.contype in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE) for c in constraints(col)):
            return [Effect(rel, ACCESS_EXCLUSIVE, "index")]
        return [Effect(rel, ACCESS_EXCLUSIVE, "metadata")]
    if st == AT.AT_SetNotNull:
        return [Effect(rel, ACCESS_EXCLUSIVE, "scan")]
    if st == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        c = cmd.def_
        if c.contype == CT.CONSTR_FOREIGN:
            work = "metadata" if c.skip_validation else "scan"
            return [Effect(rel, SHARE_ROW_EXCLUSIVE, work), Effect(c.pktable, SHARE_ROW_EXCLUSIVE, work)]
        if c.contype == CT.CONSTR_CHECK:
            return [Effect(rel, ACCESS_EXCLUSIVE, "metadata" if c.skip_validation else "scan")]
        if c.contype in (CT.CONSTR_PRIMARY, CT.CONSTR_UNIQUE, CT.CONSTR_EXCLUSION):
            return [Effect(rel, ACCESS_EXCLUSIVE, "metadata" if c.indexname else "index")]
        if c.contype == CT.CONSTR_NOTNULL:
            return [Effect(rel, ACCESS_EXCLUSIVE, "scan")]
    if st == AT.AT_ValidateConstraint:
        return [Effect(rel, SHARE_UPDATE_EXCLUSIVE, "scan")]
    if st == AT.AT_SetTableSpace:
        return [Effect(rel, ACCESS_EXCLUSIVE, "rewrite")]
    if st in (AT.AT_SetStatistics, AT.AT_SetOptions, AT.AT_ResetOptions, AT.AT_SetRelOptions,
              AT.AT_ResetRelOptions, AT.AT_ClusterOn, AT.AT_DropCluster):
        return [Effect(rel, SHARE_UPDATE_EXCLUSIVE, "metadata")]
    if st in (AT.AT_EnableTrig, AT.AT_DisableTrig, AT.AT_EnableTrigAll, AT.AT_DisableTrigAll,
              AT.AT_EnableTrigUser, AT.AT_DisableTrigUser):
        return [Effect(rel, SHARE_ROW_EXCLUSIVE, "metadata")]
    return [Effect(rel, ACCESS_EXCLUSIVE, "metadata")]


def effects(stmt: Statement) -> list[Effect]:
    """One entry per relation the statement locks, the heaviest effect per relation."""
    node = stmt.node
    out: list[Effect] = []
    if isinstance(node, ast.AlterTableStmt) and node.objtype == enums.ObjectType.OBJECT_TABLE:
        for cmd in node.cmds or ():
            out += _alter_cmd(node.relation, cmd)
    elif isinstance(node, ast.IndexStmt):
        out.append(Effect(node.relation, SHARE_UPDATE_EXCLUSIVE if node.concurrent else SHARE, "index"))
    elif isinstance(node, ast.CreateStmt):
        out.append(Effect(node.relation, None, "none"))
        for elt in node.tableElts or ():
            refs = [elt] if isinstance(elt, ast.Constraint) else constraints(elt) if isinstance(elt, ast.ColumnDef) else []
            out += [Effect(c.pktable, SHARE_ROW_EXCLUSIVE, "metadata") for c in refs if c.contype == CT.CONSTR_FOREIGN]
    elif isinstance(node, ast.DropStmt) and node.removeType in (enums.ObjectType.OBJECT_TABLE, enums.ObjectType.OBJECT_INDEX,
                                                                 enums.ObjectType.OBJECT_MATVIEW):
        lock = SHARE_UPDATE_EXCLUSIVE if node.concurrent else ACCESS_EXCLUSIVE
        for obj in node.objects or ():
            names = [s.sval for s in obj] if isinstance(obj, tuple) else []
            rel = ast.RangeVar(schemaname=names[-2] if len(names) > 1 else None, relname=names[-1]) if names else None
            out.append(Effect(rel, lock, "metadata"))
    elif isinstance(node, ast.RenameStmt) and node.relation is not None:
        out.append(Effect(node.relation, ACCESS_EXCLUSIVE, "metadata"))
    elif isinstance(node, ast.TruncateStmt):
        out += [Effect(rel, ACCESS_EXCLUSIVE, "metadata") for rel in node.relations or ()]
    elif isinstance(node, (ast.UpdateStmt, ast.DeleteStmt)):
        out.append(Effect(node.relation, ROW_EXCLUSIVE, "rows", whole_table=node.whereClause is None))
    elif isinstance(node, ast.InsertStmt) and node.selectStmt is not None:
        out.append(Effect(node.relation, ROW_EXCLUSIVE, "rows", whole_table=False))
    elif isinstance(node, ast.VacuumStmt):
        full = any(o.defname == "full" for o in node.options or ())
        for r in node.rels or ():
            out.append(Effect(r.relation, ACCESS_EXCLUSIVE if full else SHARE_UPDATE_EXCLUSIVE, "rewrite" if full else "scan"))
    elif isinstance(node, ast.ClusterStmt) and node.relation is not None:
        out.append(Effect(node.relation, ACCESS_EXCLUSIVE, "rewrite"))
    elif isinstance(node, ast.CreateTrigStmt):
        out.append(Effect(node.relation, SHARE_ROW_EXCLUSIVE, "metadata"))
    merged: dict[str, Effect] = {}
    for e in out:
        key = f"{e.table.schemaname}.{e.table.relname}" if e.table is not None else "?"
        merged[key] = _heavier(merged[key], e) if key in merged else e
    return list(merged.values())
