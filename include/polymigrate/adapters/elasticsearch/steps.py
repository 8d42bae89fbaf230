"""The steps of an Elasticsearch/OpenSearch migration file, except ``blue_green`` (``bluegreen``).

Each step gets a ``StepContext``: the REST seam, the lease's fence (called right before every write),
a ``state`` dict persisted in the ledger row's progress (so a retry knows what the step had done),
and ``resuming`` (this step was in flight when the previous try stopped). Steps are written so a
re-run after a crash converges: templates and mappings are PUTs, a recorded task is re-attached,
an index or alias change that already happened is recognised instead of failing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from polymigrate.adapters.elasticsearch.api import SearchApi, SearchError, check_index_name
from polymigrate.adapters.elasticsearch.lease import LeaseLost
from polymigrate.errors import PermanentError, TransientError
from polymigrate.spec import formats

log = logging.getLogger("polymigrate.elasticsearch")

MAPPING_KEYS = frozenset({"properties", "dynamic", "_source", "_meta", "dynamic_templates", "_routing",
                          "date_detection", "numeric_detection", "runtime", "_field_names", "enabled",
                          "dynamic_date_formats", "_data_stream_timestamp"})
# field parameters that cannot change on an existing field (the server refuses; the fix is a reindex)
IMMUTABLE_PARAMS = ("analyzer", "index", "doc_values", "store", "format", "normalizer", "scaling_factor",
                    "index_options", "similarity", "term_vector", "null_value", "enabled", "dims", "path")
PARAM_DEFAULTS = {"index": True, "doc_values": True, "store": False, "enabled": True}
UNREACHABLE_SECONDS = 300  # how long a task's polls may fail (busy node, outage) before the step gives up


class TaskLost(Exception):
    """The server no longer knows the task (node restarted, task cancelled): start it again."""


@dataclass
class StepContext:
    api: SearchApi
    fence: Callable[[str], None]             # renew the lease or raise LeaseLost, before a write
    checkpoint: Callable[[], None]           # persist ``state`` into the ledger row (fenced)
    lease_lost: Callable[[], bool]
    state: dict[str, Any]
    resuming: bool
    label: str                               # "<file> step 2 (blue_green)" for logs
    batch_size: int = 1000
    poll_seconds: float = 2.0
    log_every_seconds: float = 10.0
    notes: list[str] = field(default_factory=list)
    reindexed: list[int] = field(default_factory=lambda: [0, 0])  # [documents, server ms] of the tasks it watched: metrics


# --- templates ------------------------------------------------------------------------------------

def unwrap_mapping(mappings: Any) -> Any:
    """A pre-7 mapping keeps its fields under a type name (``{"_doc": {"properties": …}}``): drop the type."""
    if isinstance(mappings, dict) and len(mappings) == 1:
        (key, value), = mappings.items()
        if key not in MAPPING_KEYS and isinstance(value, dict):
            return value
    return mappings


def index_body(body: dict) -> dict:
    """settings/mappings/aliases of an index body, mappings without a type level."""
    out = {k: body[k] for k in ("settings", "mappings", "aliases") if k in body}
    if "mappings" in out:
        out["mappings"] = unwrap_mapping(out["mappings"])
    return out


def composable_template(args: formats.IndexTemplate | formats.PutIndexTemplate) -> dict:
    """Whatever template body the file holds, as a composable ``_index_template`` body."""
    body = dict(args.body)
    if isinstance(body.get("template"), dict) or "composed_of" in body:
        out = body  # composable already
    elif "index_patterns" in body or isinstance(body.get("template"), str):
        # legacy ``_template``: patterns (``template`` was their name before 6.0), ``order``, index body at the top
        patterns = body.get("index_patterns") or [body["template"]]
        out = {"index_patterns": patterns if isinstance(patterns, list) else [patterns], "template": index_body(body)}
        if body.get("order") is not None:
            out["priority"] = int(body["order"])
        if body.get("version") is not None:
            out["version"] = body["version"]
    else:
        out = {"template": index_body(body)}  # an index body
    for key in ("index_patterns", "priority", "composed_of"):
        value = getattr(args, key, None)
        if value is not None:
            out[key] = value
    if not out.get("index_patterns"):
        raise PermanentError(f"index template {args.name!r} has no index_patterns",
                             hint=f"add \"index_patterns\": [\"{args.name}_v*\"] to the step (the indices it applies to)")
    return out


def component_body(body: dict) -> dict:
    if isinstance(body.get("template"), dict):
        return body
    return {"template": index_body(body), **({"version": body["version"]} if "version" in body else {})}


# --- mappings -------------------------------------------------------------------------------------

def _type(spec: dict) -> str | None:
    return spec.get("type") or ("object" if "properties" in spec else None)


def _default(param: str, field_type: str | None) -> Any:
    if param == "doc_values" and field_type in ("text", "annotated_text", "match_only_text"):
        return False  # text fields have no doc values
    return PARAM_DEFAULTS.get(param)


def mapping_conflicts(live: dict, new: dict, prefix: str = "") -> list[str]:
    """Changes in ``new`` (a ``properties`` mapping) that an existing field cannot take in place."""
    out = []
    for name, spec in (new or {}).items():
        old = (live or {}).get(name)
        if not isinstance(spec, dict) or not isinstance(old, dict):
            continue
        path = prefix + name
        old_t, new_t = _type(old), _type(spec)
        if old_t and new_t and old_t != new_t:
            out.append(f"{path}: type {old_t} → {new_t}")
            continue
        for param in IMMUTABLE_PARAMS:
            before = old.get(param, _default(param, old_t))
            if param in spec and spec[param] != before:
                out.append(f"{path}: {param} {before!r} → {spec[param]!r}")
        out += mapping_conflicts(old.get("properties") or {}, spec.get("properties") or {}, path + ".")
        out += mapping_conflicts(old.get("fields") or {}, spec.get("fields") or {}, path + ".")
    return out


def put_mapping(ctx: StepContext, args: formats.PutMapping) -> dict:
    """Additive mapping change on an index or every index behind an alias; a change that needs a
    reindex is refused before anything is sent, naming the fields and the fix."""
    body = unwrap_mapping(args.body)
    live = ctx.api.get_mapping(args.index)
    conflicts = []
    for index, m in sorted(live.items()):
        props = (m.get("mappings") or {}).get("properties") or {}
        conflicts += [f"{index}.{c}" for c in mapping_conflicts(props, body.get("properties") or {})]
    if conflicts:
        raise PermanentError("put_mapping cannot change existing fields in place: " + "; ".join(conflicts),
                             hint="a changed field needs a new index: use a blue_green step whose body has the new "
                                  "mapping (it reindexes behind the alias and switches atomically), or add a new field "
                                  "(e.g. a multi-field under \"fields\") instead of changing this one")
    ctx.fence("put_mapping")
    return ctx.api.put_mapping(args.index, body)


# --- tasks ----------------------------------------------------------------------------------------

def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def task_progress(status: dict) -> tuple[int, int]:
    """(documents handled, total) of a reindex task status."""
    done = sum(int(status.get(k) or 0) for k in ("created", "updated", "deleted", "version_conflicts", "noops"))
    return done, int(status.get("total") or 0)


def watch_task(ctx: StepContext, task_id: str, what: str) -> dict:
    """Poll ``_tasks/<id>`` until it completes, logging progress %, rate and ETA; its response.

    Raises TaskLost when the server no longer has it (or it was cancelled), PermanentError when it
    failed, LeaseLost when this run lost the lock meanwhile (the task keeps running: whoever holds
    the lock re-attaches to it).
    """
    attached = time.monotonic()
    first_done: int | None = None
    last_log = last_save = attached
    unreachable_since: float | None = None
    delay = 0.1
    last_error: SearchError | None = None
    while True:
        if ctx.lease_lost():
            if unreachable_since is not None and last_error is not None:
                # the lease was given up because nobody could reach the server to renew it, not taken
                raise TransientError(f"{ctx.label}: the server did not answer for "
                                     f"{time.monotonic() - unreachable_since:.0f}s ({last_error}), so the migration "
                                     f"lock could not be renewed; stopped watching task {task_id}",
                                     hint="once the server is back, retry: the run re-attaches to the task "
                                          "(it goes on on the server)")
            # lost without an unreachable server means the lock document changed under us (409/404)
            raise LeaseLost(f"{ctx.label}: the migration lock was taken over by another run while this one watched "
                            f"task {task_id}; stopped (the task continues and the lock's holder re-attaches to it)")
        try:
            t = ctx.api.task(task_id)
        except SearchError as exc:
            # the task runs on the server whatever happens to this poll: a busy node (429, a tripped
            # memory breaker) or a short outage is waited out, up to UNREACHABLE_SECONDS
            if not exc.transient:
                raise
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            last_error = exc
            if now - unreachable_since > UNREACHABLE_SECONDS:
                raise TransientError(f"{what}: task {task_id} could not be polled for {UNREACHABLE_SECONDS}s: {exc}",
                                     hint="retry: the run re-attaches to the task") from exc
            log.warning("%s: polling task %s failed (%s); the task goes on, polling again", ctx.label, task_id,
                        exc.type or exc.status or f"the server did not answer: {exc}")
            time.sleep(min(5.0, ctx.poll_seconds * 2))
            continue
        unreachable_since = None
        if t is None:
            raise TaskLost(f"task {task_id} is unknown to the server")
        if t.get("completed"):
            if t.get("error"):
                err = t["error"]
                raise PermanentError(f"{what}: task {task_id} failed: {err.get('type')}: {err.get('reason')}")
            resp = t.get("response") or {}
            if resp.get("canceled"):
                raise TaskLost(f"task {task_id} was cancelled ({resp['canceled']})")
            done, total = task_progress(resp)
            log.info("%s: %s done: %s documents in %s", ctx.label, what, f"{done:,}", _clock(resp.get("took", 0) / 1000))
            ctx.reindexed[0] += done
            ctx.reindexed[1] += int(resp.get("took") or 0)
            return resp
        status = (t.get("task") or {}).get("status") or {}
        done, total = task_progress(status)
        now = time.monotonic()
        if first_done is None:
            first_done = done
        if now - last_log >= ctx.log_every_seconds:
            rate = (done - first_done) / max(now - attached, 1e-6)
            pct = 100.0 * done / total if total else 0.0
            eta = _clock((total - done) / rate) if rate > 0 and total else "?"
            log.info("%s: %s %.1f%% (%s/%s docs), %s docs/s, ETA %s", ctx.label, what, pct, f"{done:,}",
                     f"{total:,}", f"{rate:,.0f}", eta)
            last_log = now
        if now - last_save >= 30:
            ctx.state["done"], ctx.state["total"] = done, total
            ctx.checkpoint()
            last_save = now
        time.sleep(delay)
        delay = min(delay * 2, ctx.poll_seconds)


def check_reindex_response(resp: dict, what: str) -> None:
    failures = resp.get("failures") or []
    if failures:
        first = failures[0]
        cause = first.get("cause") or {}
        if all(f.get("status") in (429, 503) for f in failures):  # shards unavailable or rejecting: not the data
            raise TransientError(f"{what}: {len(failures)} document(s) not written, the target's shards were "
                                 f"unavailable or busy: {cause.get('type')}: {cause.get('reason')}",
                                 hint="retry once the cluster is healthy; the copy resumes (documents already "
                                      "copied are skipped by version)")
        raise PermanentError(f"{what}: {len(failures)} document(s) failed, first {first.get('id')!r}: "
                             f"{cause.get('type')}: {cause.get('reason')}",
                             hint="fix the new index's mapping (or the script) for these documents; the alias "
                                  "was not switched and the old index is untouched")


def start_and_watch(ctx: StepContext, key: str, body: dict, what: str, *, slices: Any = "auto",
                    requests_per_second: float | None = None) -> dict:
    """Start a reindex (or re-attach to the one recorded under ``state[key]``) and wait for it."""
    task_id = ctx.state.get(key)
    if task_id:
        log.info("%s: re-attaching to %s task %s", ctx.label, what, task_id)
        try:
            return watch_task(ctx, task_id, what)
        except TaskLost as exc:
            log.warning("%s: %s; starting it again", ctx.label, exc)
            ctx.state.pop(key, None)
            raise
    ctx.fence(what)
    task_id = ctx.api.reindex(body, slices=slices, requests_per_second=requests_per_second)
    ctx.state[key] = task_id
    ctx.checkpoint()
    log.info("%s: %s started as task %s", ctx.label, what, task_id)
    return watch_task(ctx, task_id, what)


# --- the simple steps -----------------------------------------------------------------------------

CLOCK_SKEW_MS = 5_000  # how far the cluster's clock may be behind the runner's


def create_index(ctx: StepContext, args: formats.CreateIndex) -> None:
    check_index_name(args.index)
    body = index_body(args.body) if args.body else {}
    earlier = ctx.state.get("requested_at") if ctx.resuming else None  # an earlier try sent the request
    if earlier is None:
        # recorded before the request, so a retry that finds the index knows this step may have made it
        ctx.state["requested_at"] = int(time.time() * 1000)
        ctx.checkpoint()
    ctx.fence("create_index")
    try:
        ctx.api.create_index(args.index, body)
    except SearchError as exc:
        if exc.type == "resource_already_exists_exception" and earlier is not None and \
                made_by_this_step(ctx.api, args.index, body, int(earlier)):
            log.info("%s: index %s already created by the previous try", ctx.label, args.index)
            return
        if not exc.transient:
            ctx.state.pop("requested_at", None)  # refused: this request created nothing
        raise


def made_by_this_step(api: SearchApi, index: str, body: dict, requested_at: int) -> bool:
    """Whether an index found in place of the one a step asked for is that step's: created after the
    step's first request, with every field of the body's mapping as the body says. An index made by
    hand (or by another file) with the same name is never adopted."""
    settings = api.get_settings(index).get(index, {}).get("settings", {})
    if int(settings.get("index.creation_date", 0)) < requested_at - CLOCK_SKEW_MS:
        return False
    wanted = _field_types(unwrap_mapping(body.get("mappings") or {}).get("properties") or {})
    if not wanted:
        return True
    live = api.get_mapping(index).get(index, {}).get("mappings") or {}
    have = _field_types(live.get("properties") or {})
    return all(have.get(f) == t for f, t in wanted.items())


def _field_types(props: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, spec in props.items():
        if isinstance(spec, dict):
            out[prefix + name] = spec.get("type") or "object"
            out.update(_field_types(spec.get("properties") or {}, prefix + name + "."))
    return out


def reindex(ctx: StepContext, args: formats.Reindex) -> dict:
    source: dict[str, Any] = {"index": args.source, "size": ctx.batch_size}
    if args.query:
        source["query"] = args.query
    body: dict[str, Any] = {"source": source, "dest": {"index": args.dest}}
    if args.pipeline:
        body["dest"]["pipeline"] = args.pipeline
    if args.script:
        body["script"] = args.script
    while True:
        try:
            resp = start_and_watch(ctx, "task", body, f"reindex {args.source} → {args.dest}", slices=args.slices,
                                   requests_per_second=args.requests_per_second)
            break
        except TaskLost:
            continue  # copying again is safe: the same ids are overwritten
    check_reindex_response(resp, f"reindex {args.source} → {args.dest}")
    return {"created": resp.get("created"), "updated": resp.get("updated")}


def switch_alias(ctx: StepContext, args: formats.SwitchAlias) -> None:
    """One atomic ``_aliases`` call; ``remove`` carries ``must_exist`` so it only applies to the state
    the file expects (a second runner, or a switch someone made by hand, makes it fail as a whole)."""
    check_index_name(args.alias, "alias")
    current = ctx.api.alias_targets(args.alias)
    if args.to in current and (args.from_ is None or args.from_ not in current):
        log.info("%s: alias %s already on %s", ctx.label, args.alias, args.to)
        return
    props = {k: v for k, v in (current.get(args.from_) or {}).items()
             if k in ("filter", "index_routing", "search_routing", "is_write_index", "is_hidden")}
    actions: list[dict] = [{"add": {"index": check_index_name(args.to), "alias": args.alias, **props}}]
    if args.from_ is not None:
        actions.append({"remove": {"index": args.from_, "alias": args.alias, "must_exist": True}})
    ctx.fence("switch_alias")
    try:
        ctx.api.update_aliases(actions)
    except SearchError as exc:
        if exc.status == 404 and args.from_ is not None:
            raise PermanentError(f"alias {args.alias} is not on {args.from_} (it is on {sorted(current) or 'nothing'}); "
                                 "nothing was switched",
                                 hint="someone moved the alias: check it, then fix the file's 'from' or repair") from exc
        raise


def delete_index(ctx: StepContext, args: formats.DeleteIndex) -> None:
    check_index_name(args.index)
    behind = ctx.api.indices(args.index).get(args.index, {}).get("aliases") or {}
    if behind:
        raise PermanentError(f"index {args.index} is behind alias(es) {', '.join(sorted(behind))}; not deleted",
                             hint="switch the alias away first (blue_green or switch_alias), in an earlier migration")
    ctx.fence("delete_index")
    try:
        ctx.api.delete_index([args.index])
    except SearchError as exc:
        if not (ctx.resuming and exc.status == 404):
            raise


def raw_request(ctx: StepContext, args: formats.Request) -> Any:
    if args.method not in ("GET", "HEAD"):
        ctx.fence(f"{args.method} {args.path}")
    return ctx.api.request(args.method, args.path, body=args.body)


def _index_template(ctx: StepContext, args: formats.IndexTemplate | formats.PutIndexTemplate) -> None:
    body = composable_template(args)
    ctx.fence("index_template")
    ctx.api.put_index_template(args.name, body)


def _component_template(ctx: StepContext, args: formats.ComponentTemplate) -> None:
    ctx.fence("component_template")
    ctx.api.put_component_template(args.name, component_body(args.body))


def _pipeline(ctx: StepContext, args: formats.Pipeline) -> None:
    ctx.fence("pipeline")
    ctx.api.put_pipeline(args.name, args.body)


# every step kind of ``formats.STEP_KINDS`` but blue_green (bluegreen); a unit test checks the two agree
SIMPLE_STEPS: dict[str, Callable[[StepContext, Any], Any]] = {
    "create_index": create_index,
    "index_template": _index_template,
    "put_index_template": _index_template,
    "component_template": _component_template,
    "put_mapping": put_mapping,
    "reindex": reindex,
    "switch_alias": switch_alias,
    "delete_index": delete_index,
    "pipeline": _pipeline,
    "request": raw_request,
}


def run_simple(ctx: StepContext, step: formats.Step) -> None:
    """Run one non-blue-green step."""
    SIMPLE_STEPS[step.kind](ctx, step.args)


def short(step: formats.Step) -> str:
    text = json.dumps({step.kind: step.args.model_dump(by_alias=True, exclude_none=True)}, separators=(",", ":"))
    return text if len(text) <= 300 else text[:297] + "..."


def classify(exc: Exception) -> type[PermanentError]:
    """TransientError for what a retry can fix (unreachable, throttled, busy), else PermanentError."""
    if isinstance(exc, SearchError) and exc.transient:
        return TransientError
    return PermanentError
