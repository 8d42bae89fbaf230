-- polymigrate: phase=migrate, batch_size=100
-- Migrate step of the full_name release: cached profiles (user_profile:<id>, JSON) that carry
-- first_name/last_name gain full_name, so the new application reads it from the cache as it reads
-- it from PostgreSQL. The old names stay for application versions still running (a cache entry is
-- rewritten by the application itself on its next change).
--
-- Idempotent per key: a profile that already has full_name is left alone; values that are not a
-- JSON object are skipped. SET ... KEEPTTL keeps the expiry the application gave the key.
local prefix = ARGV[3]
local res = redis.call('SCAN', ARGV[1], 'MATCH', prefix .. 'user_profile:*', 'COUNT', tonumber(ARGV[2]), 'TYPE', 'string')
local updated = 0
for _, key in ipairs(res[2]) do
  local ok, profile = pcall(cjson.decode, redis.call('GET', key))
  if ok and type(profile) == 'table' and profile.full_name == nil
     and (type(profile.first_name) == 'string' or type(profile.last_name) == 'string') then
    local parts = {}
    if type(profile.first_name) == 'string' and profile.first_name ~= '' then table.insert(parts, profile.first_name) end
    if type(profile.last_name) == 'string' and profile.last_name ~= '' then table.insert(parts, profile.last_name) end
    profile.full_name = table.concat(parts, ' ')
    redis.call('SET', key, cjson.encode(profile), 'KEEPTTL')
    updated = updated + 1
  end
end
return {res[1], updated}
