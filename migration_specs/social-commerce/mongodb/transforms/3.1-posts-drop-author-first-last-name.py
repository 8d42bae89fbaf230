# polymigrate: phase=contract
"""Contract step of the full_name release: posts lose author.first_name / author.last_name.

Runs with the contract phase (after the earlier phases verified in the region, and after the soak
where the environment has one), once no application version reads the old names. The filter is the
guard (``marker=False``): a post leaves it in the write that removes the names, so a retry resumes
where the checkpoint says and never rewrites a post. Undo is refused, as for every contract file.
"""

OLD_NAMES = {"$or": [{"author.first_name": {"$exists": True}}, {"author.last_name": {"$exists": True}}]}


def up(db, ctx):
    ctx.transform("posts", OLD_NAMES, {"$unset": {"author.first_name": "", "author.last_name": ""}},
                  marker=False, name="posts-drop-old-names")


def down(db, ctx):
    def split(post):
        first, _, last = ((post.get("author") or {}).get("full_name") or "").partition(" ")
        return {"$set": {"author.first_name": first or None, "author.last_name": last or None}}

    ctx.transform("posts", {"schemaVersion": 2, "author.first_name": {"$exists": False}}, split,
                  projection={"author": 1}, marker=False, name="posts-restore-old-names")
