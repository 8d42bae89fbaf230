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

Elasticsearch / OpenSearch::

    {"description": "...", "steps": [{"index_template": {...}}, {"blue_green": {...}},
                                     {"method": "PUT", "path": "/_ingest/pipeline/x", "body": {...}}]}

Each step is an object with exactly one key naming the step, or a raw request (docs/elasticsearch.md).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from polymigrate.adapters import TECHNOLOGIES

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
    phase: Literal["expand", "migrate", "contract"] | None = Field(None, description="release phase (docs/phases.md)")
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


class IndexTemplate(_Model):
    """An index template from the body a team already keeps: composable (``index_patterns`` +
    ``template``), legacy (``index_patterns`` + top-level ``settings``/``mappings``, ``order``), or a
    bare index body (``settings``/``mappings``/``aliases``, with ``index_patterns`` given here)."""

    name: str
    body: dict[str, Any] = Field(default_factory=dict)
    index_patterns: list[str] | None = Field(None, description="overrides or completes the body's")
    priority: int | None = None
    composed_of: list[str] | None = None


class ComponentTemplate(_Model):
    """A component template: ``{"template": {...}}`` or a bare index body."""

    name: str
    body: dict[str, Any]


class PutIndexTemplate(_Model):
    """The first format's name for a composable template; the same as ``index_template``."""

    name: str
    body: dict[str, Any] = Field(description="composable template: index_patterns, priority, template")


class Reindex(_Model):
    source: str
    dest: str
    query: dict[str, Any] | None = Field(None, description="only documents matching this query")
    script: dict[str, Any] | None = Field(None, description="painless script applied to each document")
    pipeline: str | None = None
    slices: int | Literal["auto"] = "auto"
    requests_per_second: float | None = Field(None, gt=0)


class SwitchAlias(_Model):
    alias: str
    from_: str | None = Field(None, alias="from", description="index the alias leaves; null when the alias is new")
    to: str


class PutMapping(_Model):
    index: str
    body: dict[str, Any] = Field(description="the mapping to add, e.g. {\"properties\": {...}}")


class DeleteIndex(_Model):
    index: str


class Pipeline(_Model):
    name: str
    body: dict[str, Any] = Field(description="description, processors")


class CatchUp(_Model):
    """How documents written to the old index during the reindex reach the new one: further passes
    over a field every write sets (a date such as ``@timestamp`` or a growing number)."""

    field: str
    overlap: str | float | None = Field(None, description="how far before the last pass's high-water mark the "
                                                           "next pass starts (date math like '2m', or a number); "
                                                           "covers writes that became visible late")
    max_passes: int = Field(5, ge=1, description="passes before the switch; one more runs after it")


class Verify(_Model):
    query: dict[str, Any] | None = Field(None, description="a query (a script query works) whose count must match "
                                                           "on the old and the new index")


class BlueGreen(_Model):
    """Blue-green reindex behind an alias: a new ``<alias>_v<N>`` index, async ``_reindex``,
    catch-up, verified counts, one atomic ``_aliases`` switch, the old index retained."""

    alias: str
    body: dict[str, Any] | None = Field(None, description="settings/mappings of the new index; without it the "
                                                          "index templates matching <alias>_v<N> apply")
    source: str | None = Field(None, description="default: the one index the alias points to")
    query: dict[str, Any] | None = None
    script: dict[str, Any] | None = None
    pipeline: str | None = None
    slices: int | Literal["auto"] = "auto"
    requests_per_second: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, gt=0, le=10000, description="documents per scroll batch (default: the "
                                                                      "domain's batch_size, else 1000)")
    catch_up: CatchUp | Literal["freeze", "none"] | None = Field(
        None, description="{field, overlap}: further passes over that field; 'freeze': the old index is "
                          "read-only during the reindex; 'none': nothing writes to it. Default: @timestamp "
                          "when the source maps it as a date, else the file must say")
    verify: Verify = Field(default_factory=Verify)
    retain_days: float = Field(7, ge=0, description="the old index is kept this long for undo, then retention deletes it")


class Request(_Model):
    method: Literal["GET", "HEAD", "PUT", "POST", "DELETE"]
    path: str = Field(pattern=r"^/")
    body: dict[str, Any] | list[Any] | None = None


STEP_KINDS: dict[str, type[_Model]] = {
    "create_index": CreateIndex,
    "index_template": IndexTemplate,
    "component_template": ComponentTemplate,
    "put_index_template": PutIndexTemplate,
    "reindex": Reindex,
    "switch_alias": SwitchAlias,
    "put_mapping": PutMapping,
    "delete_index": DeleteIndex,
    "pipeline": Pipeline,
    "blue_green": BlueGreen,
    "request": Request,
}


class Step(_Model):
    """One step: exactly one of the keys of ``STEP_KINDS``, or a bare raw request
    ``{"method": …, "path": …, "body": …}`` (read as ``{"request": {…}}``)."""

    create_index: CreateIndex | None = None
    index_template: IndexTemplate | None = None
    component_template: ComponentTemplate | None = None
    put_index_template: PutIndexTemplate | None = None
    reindex: Reindex | None = None
    switch_alias: SwitchAlias | None = None
    put_mapping: PutMapping | None = None
    delete_index: DeleteIndex | None = None
    pipeline: Pipeline | None = None
    blue_green: BlueGreen | None = None
    request: Request | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_key(cls, v: Any) -> Any:
        if isinstance(v, dict) and "method" in v and "path" in v:
            return {"request": v}
        if isinstance(v, dict) and len(v) != 1:
            raise ValueError(f"a step has exactly one key, one of {', '.join(STEP_KINDS)} (or is a raw request "
                             f"with method, path, body); got {sorted(v) or 'none'}")
        return v

    @property
    def kind(self) -> str:
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)

    @property
    def args(self) -> _Model:
        return getattr(self, self.kind)


class ElasticsearchStepFile(_Model):
    description: str = ""
    phase: Literal["expand", "migrate", "contract"] | None = Field(None, description="release phase (docs/phases.md)")
    lint_ignore: list[LintIgnore] = Field(default_factory=list)
    steps: list[Step] = Field(min_length=1)


FORMATS: dict[str, type[_Model]] = {key: globals()[t.format_model] for key, t in TECHNOLOGIES.items() if t.format_model}


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
        raise FormatError("; ".join(messages), line=_line_of(text, exc.errors()[0]["loc"])) from None


def _line_of(text: str, loc: tuple) -> int | None:
    """The line of the JSON value (or key) at ``loc``, as far as the path can be followed: the error
    names the file's line, not only a dotted path (an unknown step, a bad field)."""
    dec, ws = json.JSONDecoder(), re.compile(r"[ \t\n\r]*")

    def find(i: int, path: tuple) -> int:
        i = ws.match(text, i).end()
        if not path:
            return i
        head, start = path[0], i
        if text[i] == "{":
            i = ws.match(text, i + 1).end()
            while text[i] == '"':
                key_at = i
                key, i = json.decoder.scanstring(text, i + 1)
                i = ws.match(text, i).end() + 1  # the colon
                if key == head:
                    return key_at if len(path) == 1 else find(i, path[1:])
                _, i = dec.raw_decode(text, ws.match(text, i).end())
                i = ws.match(text, i).end()
                i = ws.match(text, i + 1).end() if text[i] == "," else i
            return start  # a key that is missing (required): the object that lacks it
        elif text[i] == "[" and isinstance(head, int):
            i = ws.match(text, i + 1).end()
            for _ in range(head):
                _, i = dec.raw_decode(text, i)
                i = ws.match(text, ws.match(text, i).end() + 1).end()
            return find(i, path[1:])
        return start  # the path goes on where the text does not (a union's tag): the nearest value

    try:
        return text.count("\n", 0, find(0, tuple(loc))) + 1
    except (ValueError, IndexError):
        return None


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
