"""Reading a declared-state folder (``<domain>/<technology>/schema/*.yaml``) with pydantic, every
problem named by file and line, as the spec loader names its own.

Shared by the MongoDB and Elasticsearch generators: each gives its pydantic model of one file; the
file's stem is the object's name (collection, alias) unless the file names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from polymigrate.errors import Problem, SpecError
from polymigrate.spec.loader import _validation_problems
from polymigrate.spec.reading import read_yaml

M = TypeVar("M", bound=BaseModel)


def schema_folder(desired: str | Path, technology: str) -> Path:
    """The folder of declared files: ``<technology>/schema/`` of a domain folder, ``schema/`` of a
    technology folder, else ``desired`` itself when it holds ``*.yaml`` (a domain folder's own
    domain.yaml must not make it the declaration)."""
    root = Path(desired)
    for candidate in (root / technology / "schema", root / "schema", root):
        if candidate.is_dir() and any(candidate.glob("*.y*ml")) and not (candidate / "domain.yaml").exists():
            return candidate
    raise SpecError([Problem(str(root), f"no declared {technology} state here (no *.yaml in it, in schema/ or in "
                                        f"{technology}/schema/)",
                             hint=f"declare one file per object in <domain>/{technology}/schema/ (docs/diff.md)")])


def load(folder: Path, model: type[M], name_key: str) -> dict[str, tuple[M, Path]]:
    """name → (declaration, file) of every ``*.yaml``/``*.yml`` in ``folder``; raises SpecError with
    every problem of every file (file and line), never only the first."""
    problems: list[Problem] = []
    out: dict[str, tuple[M, Path]] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        data, node, found = read_yaml(path, folder)
        problems += found
        if found:
            continue
        if data is None:
            data = {}
        if not isinstance(data, dict):
            problems.append(Problem(str(path), "must be a mapping", line=1,
                                    hint=f"write `{name_key}:` and the object's keys at the top level"))
            continue
        data.setdefault(name_key, path.stem)
        try:
            decl = model.model_validate(data)
        except ValidationError as exc:
            problems += _validation_problems(exc, str(path), node)
            continue
        name = getattr(decl, name_key)
        if name in out:
            problems.append(Problem(str(path), f"{name_key} {name!r} is also declared in {out[name][1].name}",
                                    line=1, hint="declare each object in one file"))
            continue
        out[name] = (decl, path)
    if problems:
        raise SpecError(problems)
    return out


def phase_for(naming, technology: str) -> str | None:
    """The phase a generated file needs in a folder whose files declare phases (docs/phases.md): the
    newest file's, as ``polymigrate new`` picks it, since an earlier phase after a later one is refused
    (phases follow version order within a technology). None where no file declares one."""
    from polymigrate.catalog import PHASES, Kind, discover

    folder = getattr(naming, "folder", None)
    if folder is None or not Path(folder).is_dir():
        return None
    found = [m for m in discover("diff", technology, Path(folder)).migrations.get(technology, [])
             if m.kind is Kind.VERSIONED]
    if not any(m.declares_phase for m in found):
        return None
    return max((m.phase for m in found), key=PHASES.index)


def render(doc: dict, width: int = 100) -> str:
    """JSON as the sample files are written, for the people who review it: an object or list that fits
    on its line stays on one line, the rest opens up two spaces deeper."""
    import json

    def dump(value, indent: int) -> str:
        flat = json.dumps(value, ensure_ascii=False)
        if not isinstance(value, (dict, list)) or not value or len(flat) + indent <= width:
            return flat
        pad = " " * (indent + 2)
        if isinstance(value, dict):
            items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {dump(v, indent + 2)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
        return "[\n" + ",\n".join(pad + dump(v, indent + 2) for v in value) + "\n" + " " * indent + "]"

    return dump(doc, 0) + "\n"
