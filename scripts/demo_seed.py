"""The data the demo's sample domains hold before their releases run, so the migrate phase has work to
show (the backfill's and the transform's progress with %, rate and ETA in the task log) and verify's
expectations have rows, documents, keys and index entries to check.

* Redis keys exist before the first run, as an application's cache would: ``seed_redis`` writes them
  into each environment's Redis DB before Airflow starts, once (a marker key outside the domain's
  prefix says so: the first migration renames the profiles, so writing them again on the next start
  would bring back keys the release already moved).
* PostgreSQL rows, MongoDB documents and OpenSearch documents need the tables, collections and
  index the samples' own first files create, so they cannot be written before the first run. The
  demo's copy of the specs (scripts/demo_specs.py) gains one seed file per technology right after
  those files and before the release's first phased file: each environment's DAG writes its own
  databases' data in its first run, recorded in the ledger like any file (a restart never seeds
  twice), and each file only inserts what is missing (a retry after a failure inserts nothing twice).
  These files exist only in ``.demo/specs``; ``migration_specs`` never holds data.

Sizes: FerretDB updates 20–150 documents/s, so a few hundred posts give a transform of seconds
(not minutes) whose progress lines still show; PostgreSQL and Redis take far more.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DOMAIN = "social-commerce"
USERS = 100_000          # the backfill (V1.10): 20 batches of 5,000, a progress line with % and ETA
                         # (400,000 until 2026-12-07: the six regions' seeds and backfills were a sixth
                         # of the demo's CPU, and it ran its DAGs ~2 minutes longer)
POSTS = 150              # FerretDB: the transform (3) takes seconds at its update rate, in batches of 100
FEED = 300
PEOPLE = 120             # OpenSearch documents people_v1 holds before the blue-green switch to people_v2
PROFILES = 2_000         # Redis: cached profiles under the old key name (1 renames, 4 adds full_name)
POST_COUNTERS = 500      # Redis: posts whose likes/shares/views are string counters (2 moves them)
SESSIONS = 300           # Redis: sessions without an expiry (3 gives them 30 days)
MONGO_BATCH = 100        # the transforms' batch in the demo's copy: a progress line per ~5 s on FerretDB
REDIS_MARKER = "demo:seeded:social-commerce"  # outside the domain's prefix: not in its drift snapshot

FIRST = ["Ada", "Grace", "Alan", "Katherine", "Edsger", "Barbara", "Linus", "Margaret"]
LAST = ["Lovelace", "Hopper", "Turing", "Johnson", "Dijkstra", "Liskov", "Torvalds"]
HEADER = ("Written by make demo (scripts/demo_seed.py) into the demo's copy of the specs only: data an "
          "application would hold before the full_name release, so its migrate phase has work to show.")

PG_SEED = f"""-- {HEADER}
-- Every 50th user has no first name and every 70th no last name (old sign-ups), every 350th neither:
-- the backfill gives those ''. ON CONFLICT: a retry inserts nothing twice.
INSERT INTO users (email, first_name, last_name, created_at)
SELECT format('user%s@example.com', n),
       CASE WHEN n % 50 = 0 THEN NULL ELSE (ARRAY{FIRST!r})[1 + n % {len(FIRST)}] END,
       CASE WHEN n % 70 = 0 THEN NULL ELSE (ARRAY{LAST!r})[1 + n % {len(LAST)}] END,
       now() - make_interval(mins => n)
  FROM generate_series(1, {USERS}) AS n
ON CONFLICT (email) DO NOTHING;

INSERT INTO follows (follower_id, followee_id)
SELECT u.id, u.id + 1 FROM users u WHERE u.id % 10 = 0 AND u.id < {USERS}
ON CONFLICT DO NOTHING;
"""

MONGO_SEED = f'''"""{HEADER}

{POSTS} posts at schemaVersion 1 (author first/last name, no full_name: 3 adds it, 3.1 drops the old
names) and {FEED} activity events. Fixed ``_id`` values and unordered inserts that ignore duplicates: a
retry inserts nothing twice.
"""

from datetime import datetime, timedelta, timezone

from bson.int64 import Int64
from pymongo.errors import BulkWriteError

FIRST = {FIRST!r}
LAST = {LAST!r}
KINDS = ["post", "follow", "cart_shared", "purchase"]


def _insert(collection, docs):
    try:
        collection.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        others = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
        if others:
            raise


def up(db, ctx):
    now = datetime.now(timezone.utc).replace(microsecond=0)
    posts = []
    for n in range(1, {POSTS} + 1):
        author = {{"user_id": Int64(1 + n % 500)}}
        if n % 50:
            author["first_name"] = FIRST[n % len(FIRST)]
        if n % 70:
            author["last_name"] = LAST[n % len(LAST)]
        posts.append({{"_id": n, "schemaVersion": 1, "author": author, "body": f"post {{n}} of the demo",
                      "created_at": now - timedelta(minutes=n)}})
    _insert(db.posts, posts)
    _insert(db.activity_feed, [{{"_id": n, "user_id": Int64(1 + n % 500), "kind": KINDS[n % len(KINDS)],
                                "at": now - timedelta(hours=n)}} for n in range(1, {FEED} + 1)])


def down(db, ctx):
    db.posts.delete_many({{"_id": {{"$lte": {POSTS}}}}})
    db.activity_feed.delete_many({{"_id": {{"$lte": {FEED}}}}})
'''


def _people() -> dict:
    steps = []
    for n in range(1, PEOPLE + 1):
        name = f"{FIRST[n % len(FIRST)]} {LAST[n % len(LAST)]}"
        steps.append({"request": {"method": "PUT", "path": f"/people/_doc/{n}",
                                  "body": {"user_id": n, "handle": f"user{n}", "full_name": name,
                                           "followers": n % 97, "updated_at": "2026-11-01T00:00:00Z"}}})
    steps.append({"request": {"method": "POST", "path": "/people/_refresh"}})
    return {"description": HEADER + f" {PEOPLE} people written through the people alias (PUT by id: a retry writes the same "
                                    "documents), which 2's blue-green reindex copies to people_v2",
            "steps": steps}


SEED_FILES = {"postgresql": ("1.5", "postgresql/tables/V1.5__demo_seed_users.sql"),
              "mongodb": ("2.0.1", "mongodb/collections/2.0.1-demo-seed-posts-and-activity.py"),
              "elasticsearch": ("1.5", "elasticsearch/1.5-demo-seed-people.json")}


def passed_without_seed(project, targets: dict[str, list[str]]) -> dict[str, str]:
    """Technology -> why its seed file is left out: one of its ``targets`` (URLs) already ran the sample
    past the seed's version without it (a .demo folder or an engine kept from a demo before the seeds),
    where the seed would be pending below applied files and every run refused. Nothing is deleted."""
    from polymigrate.adapters import adapter_class
    from polymigrate.connections import redact
    from polymigrate.versions import Version

    domain = project.domains.get(DOMAIN)
    out: dict[str, str] = {}
    for tech, urls in targets.items():
        if domain is None or tech not in domain.technologies:
            continue
        seed = Version(SEED_FILES[tech][0])
        for url in urls:
            if tech == "mongodb" and not _mongo_database_exists(url):  # opening its ledger would create it
                continue
            adapter = adapter_class(tech).from_url(url, domain=DOMAIN, settings=domain.technologies.get(tech))
            try:
                versions = [Version(e.version) for e in adapter.read_ledger() if e.version]
            finally:
                adapter.close()
            if any(v > seed for v in versions) and seed not in versions:
                out[tech] = (f"{redact(url)} ran {DOMAIN}'s {tech} files past {seed} before the demo seeded data "
                             "(kept from an earlier demo): not seeded, so no run is refused (make clean, or drop "
                             "that target, to seed it)")
                break
    return out


def _mongo_database_exists(url: str) -> bool:
    import pymongo
    from urllib.parse import urlsplit

    client = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        return urlsplit(url).path.strip("/") in client.list_database_names()
    finally:
        client.close()


def write_seed_files(copy: Path, skip: dict[str, str] | None = None) -> list[str]:
    """The seed files in the demo's copy of the specs (``copy``), for the technologies the sample
    domain has there, but those in ``skip``; their paths relative to ``copy``."""
    folder = copy / DOMAIN
    if not folder.is_dir():
        return []
    texts = {"postgresql": PG_SEED, "mongodb": MONGO_SEED, "elasticsearch": json.dumps(_people(), indent=1) + "\n"}
    written = []
    for tech, (_, rel) in SEED_FILES.items():
        text = texts[tech]
        if tech not in (skip or {}) and (folder / tech).is_dir():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text, encoding="utf-8")
            written.append(f"{DOMAIN}/{rel}")
    _smaller_mongo_batches(folder / "domain.yaml")
    return written


def _smaller_mongo_batches(domain_yaml: Path) -> None:
    """The sample's batch of 500 posts takes FerretDB longer than the 5 s between progress lines, so a
    few hundred posts would finish in one silent batch: the demo's copy transforms 100 at a time."""
    text = domain_yaml.read_text(encoding="utf-8")
    head, sep, rest = text.partition("\n  mongodb:\n")
    if not sep:
        return
    block, nl, tail = rest.partition("\n  redis:")
    block = re.sub(r"batch_size: \d+", f"batch_size: {MONGO_BATCH}  # make demo: progress lines on FerretDB", block)
    domain_yaml.write_text(head + sep + block + nl + tail, encoding="utf-8")


def seed_redis(client_for_db, dbs: list[int]) -> int:
    """Cached profiles (old key name), string post counters and sessions without an expiry in each of
    ``dbs``, once per DB; the number of DBs seeded now."""
    seeded = 0
    for db in dbs:
        r = client_for_db(db)
        if not r.set(REDIS_MARKER, "1", nx=True):
            continue
        pipe = r.pipeline(transaction=False)
        for n in range(1, PROFILES + 1):
            profile = {"first_name": FIRST[n % len(FIRST)], "last_name": LAST[n % len(LAST)]}
            pipe.set(f"social:user:{n}:profile", json.dumps(profile), nx=True)
        for n in range(1, POST_COUNTERS + 1):
            for field, value in (("likes", n % 40), ("shares", n % 7), ("views", n * 3)):
                pipe.set(f"social:post:{n}:{field}", value, nx=True)
        for n in range(1, SESSIONS + 1):
            pipe.set(f"social:session:demo{n:04d}", json.dumps({"user_id": n}), nx=True)
        pipe.execute()
        seeded += 1
    return seeded
