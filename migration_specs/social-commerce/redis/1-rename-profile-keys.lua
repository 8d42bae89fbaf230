-- Rename user:<id>:profile to user_profile:<id>, one SCAN batch per call.
local res = redis.call('SCAN', ARGV[1], 'MATCH', 'user:*:profile', 'COUNT', tonumber(ARGV[2]))
local n = 0
for _, key in ipairs(res[2]) do
  local id = string.match(key, '^user:(.+):profile$')
  if id and redis.call('EXISTS', 'user_profile:' .. id) == 0 then
    redis.call('RENAME', key, 'user_profile:' .. id)
    n = n + 1
  end
end
return {res[1], n}
