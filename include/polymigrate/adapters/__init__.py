"""One registry of adapters, by technology, built from each technology package's ``DESCRIPTOR``
(``technology.Technology``). Adapters are imported lazily so a missing driver (pymongo,
elasticsearch) only matters when that technology is used."""

from __future__ import annotations

import importlib

from polymigrate.adapters import elasticsearch, mongodb, postgresql, redis
from polymigrate.adapters.base import Adapter, Applied, Capabilities, Check, RepairReport
from polymigrate.adapters.technology import Technology

# Registering a technology: its package's descriptor, here.
TECHNOLOGIES: dict[str, Technology] = {t.key: t for t in (postgresql.DESCRIPTOR, mongodb.DESCRIPTOR, redis.DESCRIPTOR,
                                                          elasticsearch.DESCRIPTOR)}

REGISTRY: dict[str, str] = {key: t.adapter for key, t in TECHNOLOGIES.items()}


def adapter_class(technology: str) -> type[Adapter]:
    try:
        path = REGISTRY[technology]
    except KeyError:
        raise KeyError(f"no adapter for {technology!r} yet; known: {sorted(REGISTRY)}") from None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["Adapter", "Applied", "Capabilities", "Check", "RepairReport", "REGISTRY", "TECHNOLOGIES", "Technology",
           "adapter_class"]
