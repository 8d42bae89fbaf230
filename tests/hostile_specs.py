"""Hostile spec trees for tests and bench/: the samples plus domains written by an attacker (or by a
bad day): a YAML alias bomb, 10,000-deep nesting, a 10 MB YAML, migration symlinks that leave the
tree or point at /dev/zero. Issue 14, item 3.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "migration_specs"

# 385 bytes that expand to 9^9 (387 million) strings when anything walks them as a tree
ALIAS_BOMB = (
    'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
    "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
    "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    "h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\n"
    "i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n"
    "tags: *i\n"
)
DEEP = "description: deep\ntags: " + "[" * 10_000 + "]" * 10_000 + "\n"
BIG = "description: big\ntags:\n" + "  - tag\n" * 1_310_720  # 10 MB


def _domain(root: Path, name: str, yaml_text: str | None = None) -> Path:
    folder = root / name
    (folder / "postgresql").mkdir(parents=True)
    (folder / "postgresql" / "V1__a.sql").write_text("CREATE TABLE a (id int);\n")
    (folder / "domain.yaml").write_text(yaml_text if yaml_text is not None else
                                        "description: x\ntechnologies: {postgresql: {schema: x}}\n")
    return folder


def build(root: Path, *kinds: str, outside: Path | None = None) -> Path:
    """The samples copied to ``root``, plus one hostile domain per kind:
    ``bomb``, ``deep``, ``big``, ``symlink-out``, ``dev-zero``, ``yaml-dev-zero``, ``fifo``."""
    shutil.copytree(SAMPLES, root)
    outside = outside or root.parent / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "V2__evil.sql").write_text("DROP TABLE everything;\n")
    (outside / "domain.yaml").write_text("description: from elsewhere\n")
    for kind in kinds:
        if kind == "bomb":
            _domain(root, "hostile-bomb", ALIAS_BOMB)
        elif kind == "deep":
            _domain(root, "hostile-deep", DEEP)
        elif kind == "big":
            _domain(root, "hostile-big", BIG)
        elif kind == "symlink-out":
            folder = _domain(root, "hostile-link")
            (folder / "postgresql" / "V2__evil.sql").symlink_to(outside / "V2__evil.sql")
        elif kind == "dev-zero":
            folder = _domain(root, "hostile-zero")
            (folder / "postgresql" / "V2__zero.sql").symlink_to("/dev/zero")
        elif kind == "fifo":  # reading it would block forever
            import os
            folder = _domain(root, "hostile-fifo")
            (folder / "domain.yaml").unlink()
            os.mkfifo(folder / "domain.yaml")
        elif kind == "yaml-dev-zero":
            folder = _domain(root, "hostile-yaml-zero")
            (folder / "domain.yaml").unlink()
            (folder / "domain.yaml").symlink_to("/dev/zero")
        else:
            raise ValueError(kind)
    return root
