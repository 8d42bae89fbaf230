"""Posts schemaVersion 1 -> 2: author {first_name, last_name} becomes author {full_name}.

Mirrors the PostgreSQL full_name change. Runs in batches (``batch_size`` from domain.yaml, passed
as ``batch_size``) so no single write holds the collection; each batch only selects documents
still at version 1 (or without a version), so an interrupted run simply continues on retry.
"""

from pymongo import UpdateOne

OLD = {"$or": [{"schemaVersion": {"$exists": False}}, {"schemaVersion": 1}]}


def _full_name(author):
    parts = [author.get("first_name"), author.get("last_name")]
    return " ".join(p for p in parts if p) or ""


def up(db, batch_size=500):
    posts = db["posts"]
    while True:
        batch = list(posts.find(OLD, {"author": 1}).limit(batch_size))
        if not batch:
            return
        posts.bulk_write([
            UpdateOne({"_id": doc["_id"], **OLD}, {
                "$set": {"author.full_name": _full_name(doc.get("author") or {}), "schemaVersion": 2},
                "$unset": {"author.first_name": "", "author.last_name": ""},
            })
            for doc in batch
        ], ordered=False)


def down(db, batch_size=500):
    posts = db["posts"]
    while True:
        batch = list(posts.find({"schemaVersion": 2}, {"author": 1}).limit(batch_size))
        if not batch:
            return
        ops = []
        for doc in batch:
            first, _, last = (doc.get("author") or {}).get("full_name", "").partition(" ")
            ops.append(UpdateOne({"_id": doc["_id"], "schemaVersion": 2}, {
                "$set": {"author.first_name": first or None, "author.last_name": last or None, "schemaVersion": 1},
                "$unset": {"author.full_name": ""},
            }))
        posts.bulk_write(ops, ordered=False)
