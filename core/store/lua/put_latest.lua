-- PUTLATEST <key> <ts> <field value...>: set the snapshot in hash <key> (its `ts` field too)
-- unless the hash holds a newer `ts` (contract: an older entry for the same key is ignored), so
-- consumers racing in one group converge on the same state as a single consumer.

-- latest_ts_ok(held): whether a hash's `ts` field as held (false/nil: none) is one PUTLATEST
-- can compare with. The Python twin is navstream.store.ops.latest_ts_ok.
local function latest_ts_ok(held)
  return not held or string.match(held, '^%-?%d+$') ~= nil
end

-- put_latest(key, ts, argv, from, to): argv[from..to] are the field, value pairs. 1 if written.
local function put_latest(key, ts, argv, from, to)
  local current = redis.call('HGET', key, 'ts')
  if current and tonumber(current) > tonumber(ts) then return 0 end
  redis.call('HSET', key, 'ts', ts, unpack(argv, from, to))
  return 1
end
