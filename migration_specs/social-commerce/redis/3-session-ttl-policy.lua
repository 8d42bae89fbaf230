-- TTL policy: every social session:<id> key without an expiry gets 30 days.
-- polymigrate: batch_size=100
--
-- Idempotent per key: keys that already expire keep the TTL the application gave them.
local ttl_seconds = 30 * 24 * 3600
local res = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[3] .. 'session:*', 'COUNT', tonumber(ARGV[2]))
local updated = 0
for _, key in ipairs(res[2]) do
  if redis.call('TTL', key) == -1 then
    redis.call('EXPIRE', key, ttl_seconds)
    updated = updated + 1
  end
end
return {res[1], updated}
