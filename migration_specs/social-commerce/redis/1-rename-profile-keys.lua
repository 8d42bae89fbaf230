-- Rename user:<id>:profile to user_profile:<id>, one SCAN batch per call.
-- polymigrate: batch_size=100
--
-- Idempotent per key: a renamed key no longer matches the pattern, and RENAMENX never overwrites a
-- user_profile:<id> that the application already wrote (that pair is left for you to reconcile;
-- SCAN for keys still matching the old pattern after the run). RENAME keeps the key's TTL.
-- On a Redis Cluster both names must share a hash tag (user:{42}:profile -> user_profile:{42}).
-- polymigrate:lint-ignore redis-cross-slot-keys reason: social-commerce runs one Redis primary per region, not Redis Cluster; the keys it renames predate hash tags
local prefix = ARGV[3]
local res = redis.call('SCAN', ARGV[1], 'MATCH', prefix .. 'user:*:profile', 'COUNT', tonumber(ARGV[2]))
local renamed = 0
for _, key in ipairs(res[2]) do
  local id = string.sub(key, #prefix + 6, -9)  -- between 'user:' and ':profile'
  if redis.call('RENAMENX', key, prefix .. 'user_profile:' .. id) == 1 then
    renamed = renamed + 1
  end
end
return {res[1], renamed}
