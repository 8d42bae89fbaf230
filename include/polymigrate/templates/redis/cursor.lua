-- __DESCRIPTION__
-- polymigrate: batch_size=100
--
-- Cursor protocol (docs/redis.md): polymigrate calls this script with ARGV[1] = the SCAN cursor
-- ("0" on the first call), ARGV[2] = the batch size, ARGV[3] = the domain's key_prefix, and calls
-- it again with the returned cursor until it returns "0". Each run handles one SCAN batch, and
-- polymigrate runs a few in one call only while the call stays within ~1 ms, so no client of the
-- server waits long. Return {next_cursor, processed}. Keep a batch well under 1 ms (100 keys here).
--
-- Keep the change idempotent per key: after a crash the last batch may be seen again (on a
-- cluster), and SCAN may return a key twice. Check the key still needs the change before changing it.
-- Declare fixed keys the script touches with a header line such as:  -- keys: config:{shop}:flags
local prefix = ARGV[3]
local res = redis.call('SCAN', ARGV[1], 'MATCH', prefix .. 'CHANGE:ME:*', 'COUNT', tonumber(ARGV[2]))
local changed = 0
for _, key in ipairs(res[2]) do
  -- if the key still needs the change then change it; changed = changed + 1
end
return {res[1], changed}
