"""PostgreSQL: the next migration (and its undo) from two catalogs (issue 26, docs/diff.md).

The catalog diff is `results` (djrobstep's maintained successor of migra/schemainspect: psycopg 3,
dependency-ordered output, constraints added ``NOT VALID`` then validated). What it does not know
about running on a live server is wrapped here, on its statements parsed with pglast:

* an index on a table that already exists is built ``CONCURRENTLY`` in a file of its own marked
  ``-- polymigrate: transactional=false`` (with the ``ADD CONSTRAINT … USING INDEX`` and
  ``VALIDATE CONSTRAINT`` statements that follow it, each then its own short transaction);
* drops that come with additions go to a later file marked ``phase=contract`` (the additions
  ``phase=expand``), so the old application keeps working until the contract phase;
* each U file is made by applying its V file to a copy of the state before it and diffing back;
  where the way back cannot restore data it refuses, naming the statement.

States are live databases or folders applied to scratch databases (``pg_scratch``).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from polymigrate.schemadiff import Generated, GeneratedFile, NamingContext
# the states (scratch databases, folders applied, catalogs) live in pg_scratch; the command layer and
# the tests reach them through this module, the technology's one entry point
from polymigrate.schemadiff.pg_scratch import (  # noqa: F401
    Scratch, _db_of, apply_ddl_folder, apply_migrations, apply_sql, catalog, diff_statements, is_url, load_state,
    scratch_server, split)

LOCK_TIMEOUT = "lock_timeout=5s"


@dataclass
class _Stmt:
    text: str
    node: str = ""
    table: str | None = None  # schema.table the statement works on
    creates: set[str] = field(default_factory=set)
    drops: set[str] = field(default_factory=set)
    index_name: str | None = None  # CREATE INDEX name / ADD CONSTRAINT … USING INDEX name
    uses_index: str | None = None
    validates: bool = False
    contract: bool = False  # drops a table, sequence or column: what the old application may still use
    references: str | None = None  # the table a foreign key points at


def _rel(r) -> str:
    return f"{r.schemaname or 'public'}.{r.relname}"


def _classify(text: str) -> _Stmt:
    from pglast import ast, parse_sql
    from pglast.enums import AlterTableType, ConstrType, ObjectType

    s = _Stmt(text)
    try:
        node = parse_sql(text)[0].stmt
    except Exception:  # results only emits what PostgreSQL's grammar accepts; keep the text as it is
        return s
    s.node = type(node).__name__
    if isinstance(node, ast.IndexStmt):
        s.table = _rel(node.relation)
        s.index_name = node.idxname
        s.creates.add(f"{node.relation.schemaname or 'public'}.{node.idxname}")
    elif isinstance(node, ast.CreateStmt):
        s.table = _rel(node.relation)
        s.creates.add(s.table)
    elif isinstance(node, ast.DropStmt):
        for obj in node.objects or ():
            names = [getattr(x, "sval", None) for x in (obj if isinstance(obj, (list, tuple)) else [obj])]
            names = [n for n in names if n]
            if node.removeType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_INDEX, ObjectType.OBJECT_VIEW,
                                   ObjectType.OBJECT_SEQUENCE, ObjectType.OBJECT_MATVIEW) and names:
                s.drops.add(".".join(names if len(names) > 1 else ["public", *names]))
                # a view holds no data and may have to go before a column it reads changes type
                s.contract = s.contract or node.removeType in (ObjectType.OBJECT_TABLE, ObjectType.OBJECT_SEQUENCE)
    elif isinstance(node, ast.AlterTableStmt):
        s.table = _rel(node.relation)
        for cmd in node.cmds or ():
            sub = cmd.subtype
            if sub == AlterTableType.AT_AddColumn:
                s.creates.add(f"{s.table}.{cmd.def_.colname}")
            elif sub == AlterTableType.AT_DropColumn:
                s.drops.add(f"{s.table}.{cmd.name}")
                s.contract = True
            elif sub == AlterTableType.AT_DropConstraint:
                s.drops.add(f"{s.table}.{cmd.name}")
            elif sub == AlterTableType.AT_AddConstraint:
                con = cmd.def_
                s.creates.add(f"{s.table}.{con.conname}")
                if con.indexname:
                    s.uses_index = con.indexname
                if con.contype == ConstrType.CONSTR_FOREIGN and con.pktable is not None:
                    s.references = _rel(con.pktable)
            elif sub == AlterTableType.AT_ValidateConstraint:
                s.validates = True
    return s


_CREATE_INDEX = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)", re.IGNORECASE)


@dataclass
class Layout:
    """The statements of one diff, sorted into the files they go to."""

    main: list[str] = field(default_factory=list)
    concurrent: list[str] = field(default_factory=list)  # non-transactional file
    contract: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.main or self.concurrent or self.contract)


def layout(statements: list[str], existing_tables: set[str]) -> Layout:
    """Sort ``statements`` (results' order kept within each file) into the transactional file, the
    non-transactional one (indexes built CONCURRENTLY on tables that already exist, constraints
    attached to them, validations) and the contract file (tables, sequences and columns the desired
    state no longer has, when the diff also adds)."""
    out = Layout()
    parsed = [_classify(t) for t in statements]
    created = set().union(*(p.creates for p in parsed)) if parsed else set()
    adds = any(p.creates for p in parsed)
    late_tables: set[str] = set()  # tables whose constraints moved to the late file
    concurrent_indexes: set[str] = set()
    for p in parsed:
        if p.node == "IndexStmt" and p.table in existing_tables and _CREATE_INDEX.match(p.text):
            # IF NOT EXISTS: a retry after a failure mid-file skips what was built (the adapter first
            # drops an INVALID index left by an interrupted build)
            out.concurrent.append(_CREATE_INDEX.sub(lambda m: f"CREATE {m.group(1) or ''}INDEX CONCURRENTLY IF NOT EXISTS ",
                                                    p.text, count=1))
            concurrent_indexes.add(p.index_name)
        elif p.uses_index and p.uses_index in concurrent_indexes:
            out.concurrent.append(p.text)
            late_tables.add(p.table)
        elif p.validates or (p.references and p.references in late_tables):
            # VALIDATE takes SHARE UPDATE EXCLUSIVE: in its own transaction, after the NOT VALID add
            # committed, writes go on while it scans. A foreign key to a key built concurrently follows it.
            out.concurrent.append(p.text)
        elif adds and p.contract and not (p.drops & created):
            # only what the old application may still read waits for the contract phase; a dropped
            # constraint or index is a relaxation it does not notice, and later statements of results'
            # order may need it gone (a column leaving a primary key drops NOT NULL after the key)
            out.contract.append(p.text)
        else:
            out.main.append(p.text)
    if out.concurrent:
        out.notes.append(f"{len(out.concurrent)} statement(s) run outside a transaction: indexes on existing tables "
                         "are built CONCURRENTLY (no write lock), constraints are validated after their NOT VALID add")
    if out.contract:
        out.notes.append(f"{len(out.contract)} drop(s) moved to a contract-phase file: they run after the expand "
                         "phase verified (docs/phases.md)")
    return out


def _versions(next_version: str, count: int) -> list[str]:
    """``next_version`` then sub-versions of it (5, 5.1, 5.2): the team's next numbers stay free."""
    return [next_version] + [f"{next_version}.{i}" for i in range(1, count)]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower() or "generated"


def folder_phase(folder: Path | None) -> str | None:
    """The phase of the folder's newest versioned file, when its files declare phases: within a
    technology phases follow version order (docs/phases.md), so nothing generated may go back before it."""
    from polymigrate.catalog import Kind, discover

    if folder is None or not Path(folder).is_dir():
        return None
    ms = [m for m in discover("diff", "postgresql", Path(folder)).migrations.get("postgresql", [])
          if m.kind is Kind.VERSIONED]
    if not any(m.declares_phase for m in ms):
        return None
    from polymigrate.catalog import PHASES

    return max((m.phase for m in ms), key=PHASES.index)


def render(lay: Layout, naming: NamingContext, *, source: str, floor: str | None = None) -> list[GeneratedFile]:
    """The V files of a layout, named in the domain's scheme, each with a header saying what it is.
    ``floor``: the folder's newest phase, which an expand file takes when it is later (noted)."""
    parts: list[tuple[str, list[str], list[str]]] = []  # (suffix, header directives, statements)
    phased = (bool(lay.contract) and bool(lay.main or lay.concurrent)) or floor is not None
    early = floor if floor in ("migrate", "contract") else "expand"
    if early != "expand" and (lay.main or lay.concurrent):
        lay.notes.append(f"the folder's newest file is in phase {early}: the additions take phase={early} too (a "
                         "phase cannot go back within a technology, docs/phases.md); split the release if they "
                         "must run before it")
    if lay.main:
        parts.append(("", [f"phase={early}"] if phased else [], lay.main))
    if lay.concurrent:
        parts.append(("concurrently", ["transactional=false"] + ([f"phase={early}"] if phased else []), lay.concurrent))
    if lay.contract:
        parts.append(("contract", ["phase=contract"] if phased else [], lay.contract))
    files = []
    desc = _slug(naming.description)
    for version, (suffix, directives, stmts) in zip(_versions(naming.next_version, len(parts)), parts):
        head = [f"-- polymigrate: {', '.join(directives + [LOCK_TIMEOUT])}"]
        head.append(f"-- generated by polymigrate diff from {source}; review before committing")
        name = f"V{version}__{desc}{'_' + suffix if suffix else ''}.sql"
        files.append(GeneratedFile(name=name, text="\n".join(head) + "\n\n" + "\n\n".join(s.rstrip(";") + ";" for s in stmts) + "\n"))
    return files


# -- undo --------------------------------------------------------------------------------------------

_WIDER = {("smallint", "integer"), ("smallint", "bigint"), ("integer", "bigint"), ("real", "double precision"),
          ("smallint", "numeric"), ("integer", "numeric"), ("bigint", "numeric"), ("character varying", "text"),
          ("character", "text"), ("character", "character varying"), ("timestamp without time zone",
                                                                    "timestamp with time zone")}
_TYPE = re.compile(r"^(?P<base>[a-z ]+?)(?:\((?P<args>[0-9, ]+)\))?(?P<array>(\[\])*)$")


def widens(old: str, new: str) -> bool:
    """Does every value of type ``old`` fit ``new`` unchanged? (a type change the undo can reverse)."""
    if old == new:
        return True
    a, b = _TYPE.match(old), _TYPE.match(new)
    if not (a and b) or a["array"] != b["array"]:
        return False
    if a["base"] == b["base"]:
        if b["args"] is None:
            return True  # varchar(n) → varchar, numeric(p,s) → numeric
        if a["args"] is None:
            return False
        x = [int(v) for v in a["args"].split(",")]
        y = [int(v) for v in b["args"].split(",")]
        if len(x) == 2 and len(y) == 2:  # numeric(p, s): integer digits and scale both kept
            return y[1] >= x[1] and y[0] - y[1] >= x[0] - x[1]
        return all(q >= p for p, q in zip(x, y))
    return (a["base"], b["base"]) in _WIDER and b["args"] is None


def rewrites(old: str, new: str) -> bool:
    """Does ALTER COLUMN … TYPE from ``old`` to ``new`` rewrite the table (and its indexes) under
    ACCESS EXCLUSIVE? Only a longer or unlimited varchar, varchar → text and a numeric keeping its
    scale with more precision are catalog-only changes."""
    if old == new:
        return False
    a, b = _TYPE.match(old), _TYPE.match(new)
    if not (a and b) or a["array"] != b["array"]:
        return True
    if (a["base"], b["base"]) == ("character varying", "text"):
        return False
    if a["base"] != b["base"] or a["base"] not in ("character varying", "numeric", "bit varying"):
        return True
    if b["args"] is None:
        return False
    if a["args"] is None:
        return True
    x = [int(v) for v in a["args"].split(",")]
    y = [int(v) for v in b["args"].split(",")]
    return y[0] < x[0] or x[1:] != y[1:]


def possible_renames(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """A catalog diff cannot tell a renamed column from a dropped one and a new one: results writes
    DROP + ADD, which loses the values. Where a table loses one column and gains one of the same type,
    say so, so the reviewer writes RENAME COLUMN instead."""
    out = []
    tables = {c.rsplit(".", 1)[0] for c in after} & {c.rsplit(".", 1)[0] for c in before}
    for table in sorted(tables):
        gone = [c for c in before if c.rsplit(".", 1)[0] == table and c not in after]
        new = [c for c in after if c.rsplit(".", 1)[0] == table and c not in before]
        for old in gone:
            same = [n for n in new if after[n] == before[old]]
            if len(same) == 1:
                out.append(f"column {old} is dropped and {same[0].rsplit('.', 1)[1]} ({before[old]}) added: if this is a "
                           f"rename, replace both with ALTER TABLE … RENAME COLUMN, or the values are lost")
    return out


def _columns(cat: dict) -> dict[str, str]:
    return {f"{s}.{t}.{c}": col["type"] for s, snap in cat.items() for t, tab in snap["tables"].items()
            if tab["kind"] == "table" for c, col in tab["columns"].items()}


def _statement_naming(v_text: str, what: str, *names: str) -> str:
    """The V statement that did it (on one line), found by the objects' names; else the last name."""
    for stmt in split(v_text):
        if re.search(what, stmt, re.IGNORECASE) and all(
                re.search(r"\b" + re.escape(n) + r"\b", stmt, re.IGNORECASE) for n in names):
            return " ".join(stmt.split())[:160]
    return names[-1]


def losses(v_text: str, before: dict, after: dict) -> list[str]:
    """Why the way back from ``after`` to ``before`` cannot keep the data, one reason per object."""
    out = []
    cols_b, cols_a = _columns(before), _columns(after)
    tables_b = {f"{s}.{t}" for s, snap in before.items() for t, tab in snap["tables"].items() if tab["kind"] == "table"}
    tables_a = {f"{s}.{t}" for s, snap in after.items() for t, tab in snap["tables"].items() if tab["kind"] == "table"}
    for table in sorted(tables_b - tables_a):
        stmt = _statement_naming(v_text, r"\bdrop\s+table\b", table.split(".")[-1])
        out.append(f"table {table} is dropped, with its rows, by `{stmt}`: an undo would bring it back empty")
    for col in sorted(set(cols_b) - set(cols_a)):
        if col.rsplit(".", 1)[0] in tables_a:
            stmt = _statement_naming(v_text, r"\bdrop\b", *col.split(".")[-2:])
            out.append(f"column {col} is dropped, with its values, by `{stmt}`: an undo would bring it back empty")
    for col in sorted(set(cols_b) & set(cols_a)):
        old, new = cols_b[col], cols_a[col]
        if old == new:
            continue
        stmt = _statement_naming(v_text, r"\btype\b", *col.split(".")[-2:])
        if not widens(old, new):
            out.append(f"column {col} is narrowed from {old} to {new} by `{stmt}`: values cut on the way there "
                       "cannot come back")
        elif not widens(new, old):
            out.append(f"column {col} is widened from {old} to {new} by `{stmt}`: the way back narrows it again, "
                       "and values written since may not fit")
    return out


def undo_file(v_name: str, v_text: str, before_url: str, scratch: Scratch) -> tuple[GeneratedFile | None, list[str]]:
    """The U file of ``v_text`` applied on a copy of ``before_url`` (a database nobody is connected to):
    diff back from after to before. Refused (None, reasons) where the way back loses data."""
    work = scratch.create(template=before_url)
    apply_sql(work, v_text)
    reasons = losses(v_text, catalog(before_url), catalog(work))
    if reasons:
        return None, [f"{v_name}: no undo generated: {r}" for r in reasons]
    back = diff_statements(work, before_url)
    u_name = "U" + v_name[1:]
    notes = ()
    dropped = [s for s in back if _classify(s).drops]
    if dropped:
        notes = (f"{u_name} drops {len(dropped)} object(s) {v_name} created; what was written to them since is lost",)
    header = (f"-- polymigrate: {LOCK_TIMEOUT}\n-- undo of {v_name}, generated by polymigrate undo-gen: applied to a "
              "scratch copy of the state before it, then diffed back")
    # an undo runs as one transaction: indexes are dropped plainly, not CONCURRENTLY
    body = "\n\n".join(s.rstrip(";") + ";" for s in back) if back else "SELECT 1; -- the file changed no schema"
    return GeneratedFile(name=u_name, text=f"{header}\n\n{body}\n", kind="undo", notes=notes), []


# -- the seam ----------------------------------------------------------------------------------------

@contextmanager
def _states(current: str | Path, desired: str | Path, scratch: Scratch, *, domain: str, schema: str | None,
            placeholders: dict[str, str] | None) -> Iterator[tuple[str, str]]:
    yield (load_state(current, scratch, domain=domain, schema=schema, placeholders=placeholders),
           load_state(desired, scratch, domain=domain, schema=schema, placeholders=placeholders))


def _copy_of(url: str, scratch: Scratch) -> str:
    """A scratch database with ``url``'s schema (no rows): a template copy when it is ours, else its DDL."""
    if _db_of(url) in scratch.created and urlsplit(url).netloc == urlsplit(scratch.admin_url).netloc:
        return scratch.create(template=url)
    copy = scratch.create()
    stmts = diff_statements(copy, url)  # from empty: the whole schema's DDL
    if stmts:
        apply_sql(copy, ";\n".join(s.rstrip(";") for s in stmts) + ";")
    return copy


def generate(current: str | Path, desired: str | Path, *, naming: NamingContext, scratch_url: str | None = None,
             domain: str = "diff", schema: str | None = None, undo: bool = True,
             placeholders: dict[str, str] | None = None) -> Generated:
    """The files that bring ``current`` to ``desired`` (see the module's docstring), and their U files."""
    out = Generated()
    with Scratch(scratch_server(current, scratch_url)) as scratch:
        with _states(current, desired, scratch, domain=domain, schema=schema, placeholders=placeholders) as (cur, des):
            statements = diff_statements(cur, des)
            if not statements:
                return out
            cur_cat = catalog(cur)
            existing = {f"{s}.{t}" for s, snap in cur_cat.items() for t in snap["tables"]}
            lay = layout(statements, existing)
            before, after = _columns(cur_cat), _columns(catalog(des))
            lay.notes.extend(possible_renames(before, after))
            for col in sorted(set(before) & set(after)):
                if rewrites(before[col], after[col]):
                    lay.notes.append(f"column {col}: {before[col]} → {after[col]} rewrites the table and its indexes "
                                     "under ACCESS EXCLUSIVE (lint: changing-column-type); on a large table prefer a "
                                     "new column, a batched backfill, then a contract")
            source = desired if is_url(desired) else Path(desired).name
            files = render(lay, naming, source=str(source) if not is_url(desired) else "a target database",
                           floor=folder_phase(naming.folder))
            if files:
                files[0] = GeneratedFile(files[0].name, files[0].text, files[0].kind, tuple(lay.notes))
            out.files.extend(files)
            if undo:
                state = _copy_of(cur, scratch)
                for f in files:
                    u, refused = undo_file(f.name, f.text, state, scratch)
                    if u:
                        out.files.append(u)
                    out.refusals.extend(refused)
                    nxt = scratch.create(template=state)
                    apply_sql(nxt, f.text)
                    state = nxt
    return out
