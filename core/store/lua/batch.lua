-- Writes a whole batch and acknowledges it in one script call: one round trip, run in isolation
-- (no other client sees a half-written batch). Loaded after every op's file (put_latest.lua,
-- put_fields.lua, stamp.lua, xadd_first.lua, xadd_once.lua), whose functions it calls.
-- ARGV is a flat list of commands, each as <count> <name> <args...>: a Redis command, or one of
-- the ops PUTLATEST, PUTFIELDS, STAMP, XADDFIRST, XADDONCE (see their files).
-- A first pass checks every key's type and every held ts, so a write that would fail is refused
-- before anything is written; XACK comes last, so whatever stops the script part way (out of
-- memory) stops it before anything is acknowledged. Lua scripts do not roll back: the pre-check
-- is what makes a refused batch leave nothing behind. Returns {acked, one mark per XADDONCE:
-- the marker's end in ms, negated when the entry was not written}.
-- The key types each command wants; the Python twin is navstream.store.ops.WANTS.
local wants = {XADD = 'stream', XACK = 'stream', HSET = 'hash', HDEL = 'hash', ZADD = 'zset', PUTLATEST = 'hash',
               PUTFIELDS = 'hash', XADDONCE = 'stream', STAMP = 'string', XADDFIRST = 'stream'}
local kinds = {}  -- key -> type: many commands of a batch write the same streams and hashes
local function kind(key)
  local t = kinds[key]
  if t == nil then
    t = redis.call('TYPE', key)
    if type(t) == 'table' then t = t['ok'] end
    kinds[key] = t
  end
  return t
end
local held = {}  -- PUTFIELDS command start -> its fields' values as read before any write
local i, n = 1, #ARGV
while i <= n do
  local c = tonumber(ARGV[i])
  local cmd, key = ARGV[i + 1], ARGV[i + 2]
  local t = kind(key)
  if t ~= 'none' and t ~= wants[cmd] then
    return redis.error_reply('WRONGTYPE ' .. cmd .. ' ' .. key .. ' holds a ' .. t .. '; nothing written')
  end
  if cmd == 'PUTLATEST' then
    if not latest_ts_ok(redis.call('HGET', key, 'ts')) then
      return redis.error_reply('BADSTATE ' .. key .. ' has a non-numeric ts; nothing written')
    end
  elseif cmd == 'PUTFIELDS' then
    if ARGV[i + 3] ~= '' and (redis.call('GET', ARGV[i + 3]) or '') == ARGV[i + 4] then
      held[i] = false  -- nobody wrote since the writer read: its members win as sent
    else
      local values, fields = put_fields_held(key, ARGV, i + 5, i + c)
      for j = 1, #fields do
        if values[j] and not held_ts(values[j]) then
          return redis.error_reply('BADSTATE ' .. key .. ' field ' .. fields[j] .. ' has no ts; nothing written')
        end
      end
      held[i] = values
    end
  elseif cmd == 'XADDONCE' then
    local m = kind(ARGV[i + 3])
    if m ~= 'none' and m ~= 'string' then
      return redis.error_reply('WRONGTYPE XADDONCE marker ' .. ARGV[i + 3] .. ' holds a ' .. m .. '; nothing written')
    end
  elseif cmd == 'XADDFIRST' then
    local h = kind(ARGV[i + 3])
    if h ~= 'none' and h ~= 'hash' then
      return redis.error_reply('WRONGTYPE XADDFIRST ' .. ARGV[i + 3] .. ' holds a ' .. h .. '; nothing written')
    end
    local stored = redis.call('HGET', ARGV[i + 3], ARGV[i + 4])
    if stored and not first_fields(stored) then
      return redis.error_reply('BADSTATE ' .. ARGV[i + 3] .. ' field ' .. ARGV[i + 4] .. ' is no stored entry; nothing written')
    end
  end
  i = i + c + 1
end
local acked, marks = 0, {}
i = 1
while i <= n do
  local c = tonumber(ARGV[i])
  local cmd = ARGV[i + 1]
  if cmd == 'PUTLATEST' then
    put_latest(ARGV[i + 2], ARGV[i + 3], ARGV, i + 4, i + c)
  elseif cmd == 'PUTFIELDS' then
    -- The values read above still stand: a hash's fields appear in one PUTFIELDS command only
    -- (chunks of one hash hold distinct fields), and nothing else in a batch writes them.
    put_fields(ARGV[i + 2], held[i], ARGV, i + 5, i + c)
  elseif cmd == 'STAMP' then
    stamp(ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
  elseif cmd == 'XADDFIRST' then
    xadd_first(ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV, i + 6, i + c)
  elseif cmd == 'XADDONCE' then
    marks[#marks + 1] = xadd_once(ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV, i + 7, i + c)
  else
    local reply = redis.call(unpack(ARGV, i + 1, i + c))
    if cmd == 'XACK' then acked = acked + reply end
  end
  i = i + c + 1
end
table.insert(marks, 1, acked)
return marks
