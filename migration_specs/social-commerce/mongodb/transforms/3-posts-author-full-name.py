"""Posts schemaVersion 1 -> 2: author {first_name, last_name} becomes author {full_name}.

Mirrors the PostgreSQL full_name change (V1.9 … V3). ``ctx.transform`` walks the posts still at
version 1 in ``_id`` order, ``batch_size`` (domain.yaml) at a time, one bulk write per batch, and
checkpoints the last ``_id`` in the ledger: a retry after a crash continues from there. The filter
is the guard: a post leaves it in the same write that converts it, so none is converted twice and no
marker field is added (``marker=False``). Progress, rate and ETA go to the task log.
"""

OLD = {"$or": [{"schemaVersion": {"$exists": False}}, {"schemaVersion": 1}]}


def _full_name(author):
    parts = [author.get("first_name"), author.get("last_name")]
    return " ".join(p for p in parts if p) or ""


def _to_v2(post):
    return {"$set": {"author.full_name": _full_name(post.get("author") or {}), "schemaVersion": 2},
            "$unset": {"author.first_name": "", "author.last_name": ""}}


def _to_v1(post):
    first, _, last = (post.get("author") or {}).get("full_name", "").partition(" ")
    return {"$set": {"author.first_name": first or None, "author.last_name": last or None, "schemaVersion": 1},
            "$unset": {"author.full_name": ""}}


def up(db, ctx):
    ctx.transform("posts", OLD, _to_v2, projection={"author": 1}, marker=False, name="posts-v2")


def down(db, ctx):
    ctx.transform("posts", {"schemaVersion": 2}, _to_v1, projection={"author": 1}, marker=False, name="posts-v1")
