# polymigrate: phase=migrate
"""Posts schemaVersion 1 -> 2: author {first_name, last_name} gains author.full_name.

The migrate step of the full_name release (docs/phases.md): PostgreSQL V1.9 and 2.1 here add the
column and its index (expand), PostgreSQL V1.10 and this file fill them (migrate), and only the
contract phase (3.1 here, PostgreSQL V2 … V3) removes first/last name. So the old names stay in the
posts while application versions that read them may still run.

``ctx.transform`` walks the posts still at version 1 in ``_id`` order, ``batch_size`` (domain.yaml)
at a time, one bulk write per batch, and checkpoints the last ``_id`` in the ledger: a retry after a
crash continues from there. The filter is the guard: a post leaves it in the same write that
converts it, so none is converted twice and no marker field is added (``marker=False``). Progress,
rate and ETA go to the task log.
"""

OLD = {"$or": [{"schemaVersion": {"$exists": False}}, {"schemaVersion": 1}]}


def full_name(author):
    parts = [author.get("first_name"), author.get("last_name")]
    return " ".join(p for p in parts if p) or ""


def _to_v2(post):
    return {"$set": {"author.full_name": full_name(post.get("author") or {}), "schemaVersion": 2}}


def up(db, ctx):
    ctx.transform("posts", OLD, _to_v2, projection={"author": 1}, marker=False, name="posts-v2")


def down(db, ctx):
    ctx.transform("posts", {"schemaVersion": 2}, {"$set": {"schemaVersion": 1}, "$unset": {"author.full_name": ""}},
                  marker=False, name="posts-v1")
