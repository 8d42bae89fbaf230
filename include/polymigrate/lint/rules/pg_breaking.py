"""Destructive or client-breaking changes: drops, truncates, renames, relaxed NOT NULL."""

from __future__ import annotations

from pglast import ast, enums

from polymigrate.lint.pgast import AT, alter_cmds, dropped_relations, is_new_table, qualified
from polymigrate.lint.rule import Hit, Rule

OT = enums.ObjectType


def _drops(kind):
    def check(src):
        for s in src.statements:
            if isinstance(s.node, ast.DropStmt) and s.node.removeType == kind:
                if kind == OT.OBJECT_TABLE and all(is_new_table(src, s, r) for r in dropped_relations(s.node)):
                    continue  # a staging table this file created
                yield Hit.at(s)
            elif kind == OT.OBJECT_DATABASE and isinstance(s.node, ast.DropdbStmt):
                yield Hit.at(s, f"DROP DATABASE {s.node.dbname} deletes every table and row in it")
    return check


def _drop_column(src):
    for s, alter, cmd in alter_cmds(src):
        if cmd.subtype == AT.AT_DropColumn and not is_new_table(src, s, alter.relation):
            yield Hit.at(s, f"dropping {qualified(alter.relation)}.{cmd.name} loses its data and breaks clients still "
                            "reading it")


def _drop_not_null(src):
    for s, alter, cmd in alter_cmds(src):
        if cmd.subtype == AT.AT_DropNotNull and not is_new_table(src, s, alter.relation):
            yield Hit.at(s, f"{qualified(alter.relation)}.{cmd.name} may now be NULL: readers that assume a value break")


def _renames(kind):
    def check(src):
        for s in src.statements:
            n = s.node
            if isinstance(n, ast.RenameStmt) and n.renameType == kind:
                old = n.subname if kind == OT.OBJECT_COLUMN else qualified(n.relation)
                yield Hit.at(s, f"renaming {old} to {n.newname} breaks every client using the old name")
    return check


def _truncate(cascade: bool):
    def check(src):
        for s in src.statements:
            n = s.node
            if isinstance(n, ast.TruncateStmt) and (n.behavior == enums.DropBehavior.DROP_CASCADE) == cascade \
                    and not all(is_new_table(src, s, r) for r in n.relations or ()):
                yield Hit.at(s)
    return check


_CASCADE_COVERED = (OT.OBJECT_TABLE, OT.OBJECT_SCHEMA, OT.OBJECT_DATABASE)  # their own rules fire


def _drop_cascade(src):
    for s in src.statements:
        n = s.node
        if isinstance(n, ast.DropStmt) and n.behavior == enums.DropBehavior.DROP_CASCADE \
                and n.removeType not in _CASCADE_COVERED:
            yield Hit.at(s, "DROP … CASCADE also drops whatever depends on it: columns of that type, views, "
                            "defaults using that sequence")


def _drop_owned(src):
    for s in src.statements:
        if isinstance(s.node, ast.DropOwnedStmt):
            yield Hit.at(s, "DROP OWNED drops every table, sequence and function the role owns, with their data")


def _unbounded_dml(src):
    if src.migration.directives.backfill:
        return  # declared as a backfill: batched by key range, each batch its own short transaction
    for s in src.statements:
        n = s.node
        if isinstance(n, (ast.DeleteStmt, ast.UpdateStmt)) and n.whereClause is None \
                and not is_new_table(src, s, n.relation):
            verb = "DELETE" if isinstance(n, ast.DeleteStmt) else "UPDATE"
            yield Hit.at(s, f"{verb} without WHERE touches every row of {qualified(n.relation)} in one transaction")


_EXPAND = "expand/contract: stop using it in the application first, then drop it in a later release (and back it up)"
RULES = (
    Rule("ban-drop-database", "postgresql", "critical", "DROP DATABASE deletes every table in it",
         "never from a migration: decommission databases through the platform runbook", _drops(OT.OBJECT_DATABASE),
         destructive=True, squawk=True),
    Rule("ban-drop-table", "postgresql", "high", "DROP TABLE loses the data and breaks clients", _EXPAND,
         _drops(OT.OBJECT_TABLE), destructive=True, squawk=True),
    Rule("ban-drop-schema", "postgresql", "high", "DROP SCHEMA deletes the schema and (with CASCADE) every table in it",
         _EXPAND, _drops(OT.OBJECT_SCHEMA), destructive=True),
    Rule("ban-drop-cascade", "postgresql", "high", "DROP … CASCADE removes dependent objects, data included",
         "drop the dependent objects by name first, so the migration says exactly what it deletes",
         _drop_cascade, destructive=True),
    Rule("ban-drop-owned", "postgresql", "high", "DROP OWNED deletes everything a role owns",
         "REASSIGN OWNED BY the role TO another owner, then drop only what you name", _drop_owned, destructive=True),
    Rule("unbounded-delete-or-update", "postgresql", "high",
         "DELETE or UPDATE without WHERE rewrites or removes every row under one long transaction",
         "add the WHERE you mean; for a backfill, mark the file `-- polymigrate: backfill=true` (docs/postgresql.md#backfills)",
         _unbounded_dml, destructive=True),
    Rule("ban-drop-column", "postgresql", "high", "DROP COLUMN loses the data and breaks clients", _EXPAND,
         _drop_column, destructive=True, squawk=True),
    Rule("ban-truncate-cascade", "postgresql", "high",
         "TRUNCATE … CASCADE also empties every table referencing this one",
         "TRUNCATE the tables you mean by name, without CASCADE", _truncate(True), destructive=True, squawk=True),
    Rule("truncate-table", "postgresql", "high", "TRUNCATE deletes every row",
         "DELETE in batches with a WHERE clause, or keep a backup and suppress with a reason",
         _truncate(False), destructive=True),
    Rule("renaming-column", "postgresql", "medium", "renaming a column breaks clients using the old name",
         "add the new column, write both, backfill, move readers, then drop the old one",
         _renames(OT.OBJECT_COLUMN), destructive=True, squawk=True),
    Rule("renaming-table", "postgresql", "medium", "renaming a table breaks clients using the old name",
         "rename, then CREATE VIEW old_name AS SELECT * FROM new_name until every client has moved",
         _renames(OT.OBJECT_TABLE), destructive=True, squawk=True),
    Rule("ban-drop-not-null", "postgresql", "low", "DROP NOT NULL lets NULLs into a column clients trust",
         "keep the NOT NULL and give writers a default, or move readers first", _drop_not_null, squawk=True),
)
