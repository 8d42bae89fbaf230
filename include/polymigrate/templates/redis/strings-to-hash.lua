-- Move string counters post:<id>:likes|shares|views into the hash post_stats:<id>.
-- polymigrate: batch_size=100
--
-- Idempotent per key: each counter is added to its hash field and deleted in the same atomic call,
-- so it is moved once and never matches again. HINCRBY (not HSET) lets the application already
-- count new increments in the hash while old values are still being moved (see the dual-write
-- section of docs/redis.md).
local prefix = ARGV[3]
local res = redis.call('SCAN', ARGV[1], 'MATCH', prefix .. 'post:*:*', 'COUNT', tonumber(ARGV[2]), 'TYPE', 'string')
local moved = 0
for _, key in ipairs(res[2]) do
  local id, field = string.match(string.sub(key, #prefix + 1), '^post:(.+):(%a+)$')
  if field == 'likes' or field == 'shares' or field == 'views' then
    local value = tonumber(redis.call('GET', key))
    if value then
      redis.call('HINCRBY', prefix .. 'post_stats:' .. id, field, value)
      redis.call('DEL', key)
      moved = moved + 1
    end
  end
end
return {res[1], moved}
