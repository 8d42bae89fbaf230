"""One registry of adapters, by technology. Imports are lazy so a missing driver (pymongo,
elasticsearch) only matters when that technology is used."""

from __future__ import annotations

import importlib

from polymigrate.adapters.base import Adapter, Applied, Capabilities, Check, RepairReport

REGISTRY: dict[str, str] = {
    "postgresql": "polymigrate.adapters.postgresql.adapter:PostgresAdapter",
    "mongodb": "polymigrate.adapters.mongodb.adapter:MongoAdapter",
    "redis": "polymigrate.adapters.redis.adapter:RedisAdapter",
    "elasticsearch": "polymigrate.adapters.elasticsearch.adapter:ElasticsearchAdapter",
}


def adapter_class(technology: str) -> type[Adapter]:
    try:
        path = REGISTRY[technology]
    except KeyError:
        raise KeyError(f"no adapter for {technology!r} yet; known: {sorted(REGISTRY)}") from None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["Adapter", "Applied", "Capabilities", "Check", "RepairReport", "REGISTRY", "adapter_class"]
