"""The Redis adapter (registry key ``redis``): ``adapter`` (``RedisAdapter``), its lease, Lua scripts
and new-file templates.

Only the descriptor is defined here, so reading ``templates`` (CLI) does not import the adapter and
redis-py. Imports are absolute: ``import redis`` inside this package is redis-py, not this package."""

from __future__ import annotations

from polymigrate.adapters.redis.templates import new_file_template
from polymigrate.adapters.technology import Technology

DESCRIPTOR = Technology(
    key="redis",
    adapter="polymigrate.adapters.redis.adapter:RedisAdapter",
    extensions=(".lua",),
    schemes=("redis", "rediss"),
    default_port=6379,
    extras=frozenset({"ssl", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}),
    template=new_file_template(),  # include/polymigrate/templates/redis/cursor.lua
    client_factory="redis_client",
    operator="RedisMigrationOperator",
    ui_color="#f6d2cc",
    ledger_type="LUA",
)
