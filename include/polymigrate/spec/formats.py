"""The JSON migration file formats of MongoDB and Elasticsearch, as pydantic models.

The catalog checks every ``.json`` migration against these at validate time, and the adapters
parse with the same models, so a file that validates is a file the adapter can execute.
migration_specs/README.md documents both formats for people.

MongoDB::

    {"description": "...", "commands": [{"create": "posts", ...}, {"createIndexes": "posts", ...}],
     "down": [{"drop": "posts"}]}

Each command is a database command document exactly as for ``db.runCommand`` (its first key names
the command), run in order against the domain's database; ``down`` (optional) reverts them for
``polymigrate undo``. Values may be Extended JSON (``{"$date": …}``, ``{"$oid": …}``).

Elasticsearch::

    {"description": "...", "steps": [{"create_index": {...}}, {"reindex": {...}}, {"switch_alias": {...}}]}

Each step is an object with exactly one key naming the step.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_PLACEHOLDER = re.compile(r"\$\{[A-Za-z_][\w.:-]*\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LintIgnore(_Model):
    """A file-wide lint suppression (JSON has no comments); see docs/lint.md."""

    rules: list[str] = Field(min_length=1)
    reason: str = ""


# --- MongoDB ----------------------------------------------------------------------------------

class MongoCommandFile(_Model):
    description: str = ""
    lint_ignore: list[LintIgnore] = Field(default_factory=list)
    commands: list[dict[str, Any]] = Field(min_length=1)
    down: list[dict[str, Any]] = Field(default_factory=list, description="commands that revert it (polymigrate undo)")

    @field_validator("commands", "down")
    @classmethod
    def _non_empty(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, cmd in enumerate(v):
            if not cmd:
                raise ValueError(f"command {i + 1} is empty; its first key names the command, e.g. {{\"create\": \"orders\"}}")
        return v

    def command_names(self) -> list[str]:
        return [next(iter(c)) for c in self.commands]


# --- Elasticsearch ----------------------------------------------------------------------------

class CreateIndex(_Model):
    index: str
    body: dict[str, Any] = Field(default_factory=dict, description="settings, mappings, aliases")


class PutIndexTemplate(_Model):
    name: str
    body: dict[str, Any] = Field(description="composable template: index_patterns, priority, template")


class Reindex(_Model):
    source: str
    dest: str
    query: dict[str, Any] | None = Field(None, description="only documents matching this query")
    script: dict[str, Any] | None = Field(None, description="painless script applied to each document")


class SwitchAlias(_Model):
    alias: str
    from_: str | None = Field(None, alias="from", description="index the alias leaves; null when the alias is new")
    to: str


class PutMapping(_Model):
    index: str
    body: dict[str, Any] = Field(description="the mapping to add, e.g. {\"properties\": {...}}")


class DeleteIndex(_Model):
    index: str


class Request(_Model):
    method: Literal["GET", "HEAD", "PUT", "POST", "DELETE"]
    path: str = Field(pattern=r"^/")
    body: dict[str, Any] | list[Any] | None = None


STEP_KINDS: dict[str, type[_Model]] = {
    "create_index": CreateIndex,
    "put_index_template": PutIndexTemplate,
    "reindex": Reindex,
    "switch_alias": SwitchAlias,
    "put_mapping": PutMapping,
    "delete_index": DeleteIndex,
    "request": Request,
}


class Step(_Model):
    """One step: exactly one of the keys of ``STEP_KINDS``."""

    create_index: CreateIndex | None = None
    put_index_template: PutIndexTemplate | None = None
    reindex: Reindex | None = None
    switch_alias: SwitchAlias | None = None
    put_mapping: PutMapping | None = None
    delete_index: DeleteIndex | None = None
    request: Request | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, v: Any) -> Any:
        if isinstance(v, dict) and len(v) != 1:
            raise ValueError(f"a step has exactly one key, one of {', '.join(STEP_KINDS)}; got {sorted(v) or 'none'}")
        return v

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)

    @property
    def args(self) -> _Model:
        return getattr(self, self.kind)


class ElasticsearchStepFile(_Model):
    description: str = ""
    lint_ignore: list[LintIgnore] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)


FORMATS: dict[str, type[_Model]] = {"mongodb": MongoCommandFile, "elasticsearch": ElasticsearchStepFile}


def parse(technology: str, text: str) -> _Model:
    """Parse a JSON migration (placeholders already rendered); raises ValueError naming line or field."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"invalid JSON: {exc.msg}", line=exc.lineno) from None
    try:
        return FORMATS[technology].model_validate(data)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            messages.append(f"unknown key '{where}'" if err["type"] == "extra_forbidden" else f"{where}: {err['msg']}")
        raise FormatError("; ".join(messages)) from None


def check(technology: str, text: str) -> FormatError | None:
    """The first format problem of a JSON migration, or None. Placeholders count as valid values."""
    if technology not in FORMATS:
        return None
    try:
        # a placeholder may stand for a number or sit inside a string: "0" keeps both valid JSON
        parse(technology, _PLACEHOLDER.sub("0", text))
    except FormatError as exc:
        return exc
    return None


class FormatError(ValueError):
    """A JSON migration file that does not follow its technology's format."""

    def __init__(self, message: str, *, line: int | None = None):
        self.line = line
        super().__init__(message)
