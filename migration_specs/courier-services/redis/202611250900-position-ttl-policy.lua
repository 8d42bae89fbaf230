-- TTL policy: a live courier position (position:<courier id>, a hash) expires 15 minutes after its
-- last update; positions written before this policy never expired and pile up for inactive couriers.
-- polymigrate: batch_size=200, pause_ms=5
--
-- Idempotent per key: positions that already expire keep the TTL the tracking service set.
local ttl_seconds = 15 * 60
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3] .. 'position:*', 'COUNT', tonumber(ARGV[2]), 'TYPE', 'hash')
local updated = 0
for _, key in ipairs(res[2]) do
  if redis.call('TTL', key) == -1 then
    redis.call('EXPIRE', key, ttl_seconds)
    updated = updated + 1
  end
end
return {res[1], updated}
