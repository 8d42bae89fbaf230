"""A domain's labels as lint, plan, verify and the reports ask about them.

Declared labels come from domain.yaml (``Domain.labels``). Derived objects inherit: an index over a
labelled column and a column a backfill fills from a labelled one carry the source's label
(``inherited``), because they hold the same values in the same store under the same protection.
A copy into another store (a Redis cache, a search index) is a less protected place: the label must
be declared there (lint's ``label-not-carried``), so someone decided the cache may hold it.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field

from polymigrate.spec.governance import Label


@dataclass(frozen=True)
class Labelled:
    """One labelled object: its key, its label and, when inherited, what it was derived from."""

    key: str
    label: Label
    derived_from: str | None = None

    @property
    def technology(self) -> str:
        return self.key.partition(":")[0]

    @property
    def object(self) -> str:
        return self.key.partition(":")[2]

    @property
    def name(self) -> str:
        """The last part of the object: a column's or field's own name (``email``), the pattern for Redis."""
        obj = self.object
        return obj if self.technology == "redis" else obj.rsplit(".", 1)[-1]

    def to_dict(self) -> dict:
        return {"object": self.key, "kind": self.label.kind, "level": self.label.level,
                "retention": self.label.retention, **({"derived_from": self.derived_from} if self.derived_from else {})}


def _bare(table: str) -> str:
    """``schema.table`` → ``table``: labels name tables as the domain's files do, in its own schema."""
    return table.rsplit(".", 1)[-1].strip('"').lower()


@dataclass
class LabelIndex:
    """Declared and inherited labels of one domain, looked up by technology and object."""

    declared: dict[str, Label] = field(default_factory=dict)
    inherited: dict[str, Labelled] = field(default_factory=dict)
    regulated: list[dict] = field(default_factory=list)  # filled by lint's labelled-data-regulated-change

    @classmethod
    def of(cls, labels: dict[str, Label] | None) -> "LabelIndex":
        return cls({k.lower() if not k.startswith("redis:") else k: v for k, v in (labels or {}).items()})

    def all(self) -> list[Labelled]:
        return [Labelled(k, v) for k, v in self.declared.items()] + list(self.inherited.values())

    def get(self, technology: str, obj: str) -> Labelled | None:
        """The label of ``obj`` (``table.column``, ``collection.field``, ``index.field`` or a Redis key)."""
        if technology == "redis":
            for k, v in self.declared.items():
                if k.startswith("redis:") and (fnmatch.fnmatchcase(obj, k[6:]) or obj == k[6:]):
                    return Labelled(k, v)
            return None
        if technology == "postgresql":
            table, _, column = obj.rpartition(".")
            obj = f"{_bare(table)}.{column.strip(chr(34)).lower()}"
        key = f"{technology}:{obj.lower()}"
        if key in self.declared:
            return Labelled(key, self.declared[key])
        if technology == "elasticsearch":  # people_v2.email is labelled as the people alias's field
            container, _, name = obj.lower().rpartition(".")
            alias = re.sub(r"[_-]v\d+$", "", container)
            if alias != container and f"elasticsearch:{alias}.{name}" in self.declared:
                return Labelled(f"elasticsearch:{alias}.{name}", self.declared[f"elasticsearch:{alias}.{name}"])
        return self.inherited.get(key)

    def column(self, table: str, column: str) -> Labelled | None:
        return self.get("postgresql", f"{table}.{column}")

    def table_columns(self, table: str) -> list[Labelled]:
        prefix = f"postgresql:{_bare(table)}."
        return [x for x in self.all() if x.key.startswith(prefix)]

    def inherit(self, technology: str, obj: str, source: Labelled) -> None:
        """``obj`` holds ``source``'s values in the same store: it carries the same label, unless declared."""
        if self.get(technology, obj) is None:
            key = f"{technology}:{obj.lower()}"
            self.inherited[key] = Labelled(key, source.label, source.key)

    def named(self, name: str) -> list[Labelled]:
        """Labels of any technology whose column or field has this name (``email`` → users.email …), at
        level medium or above: a low label marks a pseudonymous id (``user_id``), which every store
        holds as a key, so following it by name would flag every join column."""
        name = name.lower()
        return [x for x in self.all() if x.technology != "redis" and x.name.lower() == name
                and x.label.level != "low"]

    def touched_by(self, technology: str, text: str) -> list[Labelled]:
        """Labelled objects of ``technology`` a migration's text names: for PostgreSQL, MongoDB and
        Elasticsearch the table/collection/index and the column/field both appear as words; for Redis
        the pattern's literal prefix appears. A name-level test by design: plan refuses on it, so it
        errs on the side of naming a change that touches labelled data."""
        low = text.lower()
        found = []
        for x in self.all():
            if x.technology != technology:
                continue
            if technology == "redis":
                literal = re.split(r"[*?\[]", x.object, maxsplit=1)[0]
                if literal and literal.lower() in low:
                    found.append(x)
                continue
            container, _, name = x.object.rpartition(".")
            container = container.split(".")[0]
            if _word(container, low) and _word(name, low):
                found.append(x)
        return found


def _word(name: str, text: str) -> bool:
    return bool(re.search(rf"(?<![\w]){re.escape(name.lower())}(?![\w])", text))
