"""The sample MongoDB migrations (social-commerce, courier-services) run for real on the server at
MONGO_URI: on FerretDB every file it supports runs and the others are refused before anything of
them runs, naming the command and the server; on a real MongoDB all of them run."""

from __future__ import annotations

from datetime import datetime, timezone

import pymongo
import pytest
from bson import Int64

from polymigrate.errors import PermanentError
from polymigrate.executor import migrate, undo_to
from polymigrate.ledger import Status
from tests.mongo_samples import runnable, sample_on

pytestmark = [pytest.mark.integration, pytest.mark.engine("node")]

NEEDS_REAL_MONGODB = {
    "social-commerce": {"collections/4-require-posts-schema-version-2.json": "`collMod`",
                        "collections/5-activity-feed-validator-and-expiry.json": "`collMod`"},
    "courier-services": {"202401151300-create-tracking-events.json": "`create` with `timeseries`",
                         "202403051710-proof-of-delivery-geo-and-validator.json": "`collMod`"},
}


def _seed_posts(db, n: int = 40):
    db.posts.insert_many([{"author": {"user_id": i, "first_name": "Ada", "last_name": f"L{i}"}, "body": "hi",
                           "created_at": datetime(2024, 1, 1, tzinfo=timezone.utc), **({"schemaVersion": 1} if i % 2 else {})}
                          for i in range(n)])


def test_social_commerce_posts_transform_and_what_needs_real_mongodb(make_mongo_database, mongo_server):
    migrations, adapter, ctx, db = sample_on("social-commerce", make_mongo_database("pm_social"))
    try:
        ok, refused = runnable(adapter, migrations, ctx, mongo_server)
        if mongo_server.is_ferretdb:
            assert {k: v.split(" is not supported")[0].split(": ", 1)[-1] for k, v in refused.items()} == \
                NEEDS_REAL_MONGODB["social-commerce"]
            assert all(mongo_server.label in r and ":" in r.split()[0] for r in refused.values())
        else:
            assert refused == {}
        first = migrate(adapter, ok, ctx, target="2")
        assert [a["script"] for a in first.applied] == ["collections/1-create-posts.json",
                                                        "collections/2-create-activity-feed.json"]
        _seed_posts(db)
        # the full_name release up to its migrate phase: the index (expand), then the transform (migrate)
        release = migrate(adapter, ok, ctx, target="3", out_of_order=True)
        assert [a["script"] for a in release.applied] == ["collections/2.1-index-posts-author-full-name.json",
                                                          "transforms/3-posts-author-full-name.py"]
        assert "author_full_name_recent" in db.posts.index_information()
        assert db.posts.count_documents({"schemaVersion": 2}) == 40
        # the old names stay until the contract phase: application versions that read them still run
        assert db.posts.find_one({"author.user_id": 3})["author"] == {"user_id": 3, "first_name": "Ada", "last_name": "L3",
                                                                      "full_name": "Ada L3"}
        assert db.posts.count_documents({"_polymigrate": {"$exists": True}}) == 0  # the filter is the guard
        rows = {e.script: e for e in adapter.read_ledger()}
        assert rows["transforms/3-posts-author-full-name.py"].progress["transforms"]["posts-v2"]["processed"] == 40
        assert rows["transforms/3-posts-author-full-name.py"].progress["transforms"]["posts-v2"]["batches"] == 6
        # and back: down() of the transform restores version 1 documents
        undo_to(adapter, migrations, ctx, "2")
        assert db.posts.count_documents({"schemaVersion": 1}) == 40
        assert db.posts.find_one({"author.user_id": 3})["author"] == {"user_id": 3, "first_name": "Ada", "last_name": "L3"}
        assert {e.script: e.status for e in adapter.read_ledger()}["transforms/3-posts-author-full-name.py"] is Status.UNDONE
        # the whole release, contract included: the old names go
        rest = migrate(adapter, ok, ctx, out_of_order=True)
        assert "transforms/3.1-posts-drop-author-first-last-name.py" in [a["script"] for a in rest.applied]
        assert db.posts.count_documents({"schemaVersion": 2}) == 40
        assert db.posts.find_one({"author.user_id": 3})["author"] == {"user_id": 3, "full_name": "Ada L3"}
        if not mongo_server.is_ferretdb:
            opts = db.command("listCollections", filter={"name": "posts"})["cursor"]["firstBatch"][0]["options"]
            assert opts["validator"]["$jsonSchema"]["properties"]["schemaVersion"] == {"enum": [2]}
            assert "expire_after_90_days" in db.activity_feed.index_information()
            with pytest.raises(pymongo.errors.WriteError):
                db.posts.insert_one({"schemaVersion": 1, "author": {}, "body": "x", "created_at": datetime.now()})
        assert migrate(adapter, ok, ctx, out_of_order=True).applied == []
        with pytest.raises(PermanentError, match="contract-phase migration"):
            undo_to(adapter, migrations, ctx, "3")
    finally:
        adapter.close()


def test_courier_services_proof_of_delivery_and_the_adopted_js_file(make_mongo_database, mongo_server):
    migrations, adapter, ctx, db = sample_on("courier-services", make_mongo_database("pm_courier"))
    try:
        ok, refused = runnable(adapter, migrations, ctx, mongo_server)
        expected = NEEDS_REAL_MONGODB["courier-services"] if mongo_server.is_ferretdb else {}
        assert {k: v.split(" is not supported")[0].split(": ", 1)[-1] for k, v in refused.items()} == expected
        migrate(adapter, [m for m in ok if "photo" not in m.script], ctx, out_of_order=True)
        def pod(i, **extra):  # valid for the validator of 202403051710 (delivery_id is a long)
            return {"delivery_id": Int64(i), "at": datetime(2024, 3, 6),
                    "location": {"type": "Point", "coordinates": [10.1, 36.8]}, **extra}

        db.proof_of_delivery.insert_many([pod(i, photo_key=f"p/{i}.jpg") for i in range(5)])
        result = migrate(adapter, ok, ctx, out_of_order=True)
        assert [a["script"] for a in result.applied] == ["202406101200-proof-of-delivery-photo-object.js"]
        doc = db.proof_of_delivery.find_one({"delivery_id": 2})
        assert doc["photo"] == {"key": "p/2.jpg", "bucket": "courier-proof-of-delivery"} and "photo_key" not in doc
        with pytest.raises(pymongo.errors.DuplicateKeyError):
            db.proof_of_delivery.insert_one(pod(2))
        if not mongo_server.is_ferretdb:
            info = db.command("listCollections", filter={"name": "tracking_events"})["cursor"]["firstBatch"][0]
            assert info["type"] == "timeseries"
            assert "location_geo" in db.proof_of_delivery.index_information()
    finally:
        adapter.close()
