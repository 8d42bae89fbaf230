"""``undo`` of a ``blue_green`` or ``switch_alias`` step: the alias back on the retained index, losing no write.

Split from ``bluegreen`` (which re-exports ``undo_switch`` and ``carry_deletes``); the alias
properties carried over a switch and ``_and`` live here because both directions use them.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

from polymigrate.adapters.elasticsearch.api import SearchError, q
from polymigrate.adapters.elasticsearch.steps import StepContext, TaskLost, check_reindex_response, start_and_watch
from polymigrate.errors import PermanentError

log = logging.getLogger("polymigrate.elasticsearch")

ALIAS_PROPS = ("filter", "index_routing", "search_routing", "is_hidden")


def _and(*queries: dict | None) -> dict | None:
    qs = [q for q in queries if q]
    if not qs:
        return None
    return qs[0] if len(qs) == 1 else {"bool": {"filter": qs}}


def undo_switch(ctx: StepContext, sw: dict, run: Any = None) -> None:
    """Point ``sw['alias']`` back from ``sw['to']`` to the retained ``sw['from']``, after copying back
    what was written to ``to`` since the switch (newer versions only), so undo loses no write:

    * catch-up by field: a pass over the field from the switch's high-water mark, the switch back,
      then a last pass;
    * freeze / none / a plain ``switch_alias``: ``to`` is made read-only and copied back whole
      (unchanged documents are skipped by version), then the switch back; ``to`` stays read-only.

    Resumable from ``ctx.state`` like the forward step. Deletions are carried back too
    (``carry_deletes``): a document of ``from`` (in the copy's scope) that ``to`` no longer has was
    deleted through the alias after the switch, so undo deletes it rather than bring it back.
    """
    api, st = ctx.api, ctx.state
    alias, old, new = sw["alias"], sw["from"], sw["to"]
    if st.get("phase") == "done":
        return
    if not api.exists(old):
        raise PermanentError(f"cannot undo: {old}, the index alias {alias} left, no longer exists",
                             hint="write a new forward migration instead")
    current = api.alias_targets(alias)
    if st.get("phase") != "switched":
        if old in current and new not in current:
            st["phase"] = "switched"  # a previous try switched back already
        elif new not in current:
            raise PermanentError(f"cannot undo: alias {alias} is on {', '.join(sorted(current)) or 'nothing'}, not on {new}",
                                 hint="someone moved the alias since; check it")
    by_field = sw.get("mode") == "field"

    def copy_back(label: str, query: dict | None) -> None:
        body: dict[str, Any] = {"source": {"index": new, "size": ctx.batch_size}, "conflicts": "proceed",
                                "dest": {"index": old, "version_type": "external"}}
        if query:
            body["source"]["query"] = query
        while True:
            try:
                resp = start_and_watch(ctx, "task", body, f"{label} {new} → {old}")
                break
            except TaskLost:
                continue
        check_reindex_response(resp, f"{label} {new} → {old}")
        st.pop("task", None)
        ctx.checkpoint()

    since = None
    if by_field and sw.get("hw") is not None:
        bound = float(sw["hw"]) - float(sw.get("overlap") or 0)
        since = {"range": {sw["field"]: {"gte": int(bound), "format": "epoch_millis"} if sw.get("field_kind") == "date"
                           else {"gte": bound}}}
    if st.get("phase") is None:
        if sw.get("froze"):
            ctx.fence("lift the freeze on the retained index")
            api.put_settings(old, {"index.blocks.write": None})
        if not by_field:
            ctx.fence("freeze the index being undone")
            api.put_settings(new, {"index.blocks.write": True})
            st["froze_new"] = True
        st["phase"] = "copying"
        ctx.checkpoint()
    if st["phase"] == "copying":
        api.refresh(new)
        copy_back("copy back", since)
        api.refresh(old)
        carry_deletes(ctx, sw, None)
        if by_field:  # writes to old after the switch back carry a higher value of the field
            st["hw_back"] = _max(api, old, sw["field"])
            ctx.checkpoint()
        props = {k: v for k, v in (current.get(new) or sw.get("props") or {}).items() if k in ALIAS_PROPS}
        ctx.fence("switch the alias back")
        try:
            api.update_aliases([{"add": {"index": old, "alias": alias, "is_write_index": True, **props}},
                                {"remove": {"index": new, "alias": alias, "must_exist": True}}])
        except SearchError as exc:
            now = api.alias_targets(alias)
            if not (old in now and new not in now):
                raise PermanentError(f"alias {alias} moved during the undo (now on {', '.join(sorted(now))}); "
                                     "not switched back") from exc
        st["phase"] = "switched"
        ctx.checkpoint()
    if by_field:
        api.refresh(new)
        copy_back("last copy back", since)
        # deletes in the last moments before the switch back; documents written to old since then
        # have a higher value of the field and are left alone
        if st.get("hw_back") is not None:
            bound = {"lte": int(st["hw_back"]), "format": "epoch_millis"} if sw.get("field_kind") == "date" \
                else {"lte": st["hw_back"]}
            carry_deletes(ctx, sw, {"range": {sw["field"]: bound}})
    undone = datetime.now(timezone.utc)
    st.update(phase="done", undone_at=undone.isoformat(),
              undo_retain_until=(undone + timedelta(days=float(sw.get("retain_days") or 7))).isoformat())
    ctx.checkpoint()
    log.info("%s: alias %s back on %s (%s retained until %s)", ctx.label, alias, old, new, st["undo_retain_until"][:19])


def _max(api: Any, index: str, field: str) -> Any:
    resp = api.search(index, {"size": 0, "aggs": {"hw": {"max": {"field": field}}}})
    return ((resp.get("aggregations") or {}).get("hw") or {}).get("value")


def carry_deletes(ctx: StepContext, sw: dict, within: dict | None) -> int:
    """Delete from ``sw['from']`` every document of the copy's scope that ``sw['to']`` no longer has:
    deleted through the alias after the switch. Each delete names the document's ``seq_no`` as read,
    so a document written again since (the alias may point at ``from`` by now) is left alone. The
    number deleted."""
    api, old, new = ctx.api, sw["from"], sw["to"]
    query = _and(sw.get("query"), within) or {"match_all": {}}
    resp = api.request("POST", f"/{q(old)}/_search", params={"scroll": "2m"},
                       body={"size": ctx.batch_size or 1000, "_source": False, "seq_no_primary_term": True,
                             "query": query, "sort": ["_doc"]})
    deleted = 0
    scroll = resp.get("_scroll_id")
    try:
        while True:
            hits = (resp.get("hits") or {}).get("hits") or []
            if not hits:
                break
            found = api.request("POST", f"/{q(new)}/_mget", params={"_source": "false"},
                                body={"ids": [h["_id"] for h in hits]})
            have = {d["_id"] for d in found.get("docs") or [] if d.get("found")}
            gone = [h for h in hits if h["_id"] not in have]
            if gone:
                ctx.fence(f"carry {len(gone)} delete(s) back to {old}")
            for h in gone:
                try:
                    api.request("DELETE", f"/{q(old)}/_doc/{quote(h['_id'], safe='')}",
                                params={"if_seq_no": h["_seq_no"], "if_primary_term": h["_primary_term"]})
                    deleted += 1
                except SearchError as exc:
                    if exc.status not in (404, 409):  # gone already, or written again since: leave it
                        raise
            resp = api.request("POST", "/_search/scroll", body={"scroll": "2m", "scroll_id": scroll})
            scroll = resp.get("_scroll_id") or scroll
    finally:
        if scroll:
            try:
                api.request("DELETE", "/_search/scroll", body={"scroll_id": [scroll]})
            except SearchError:
                pass  # it expires by itself
    if deleted:
        api.refresh(old)
        log.info("%s: %d document(s) deleted from %s since the switch deleted from %s too", ctx.label, deleted,
                 new, old)
    return deleted
