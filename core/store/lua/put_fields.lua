-- PUTFIELDS <key> <stamp> <seen> <field value...>: each value is "<ts> <payload>"; a field is set
-- unless it holds a newer ts: last-ts-wins per field, for state with many members. With a
-- <stamp> key ('' for none) that holds <seen>, the writer knows the held ts and sends only
-- winners, so they are set without comparing.

-- held_ts(value): the ts of a field PUTFIELDS wrote ("<ts> <payload>"), or nil when it is none.
-- The Python twin is navstream.store.ops.held_ts_ok.
local function held_ts(value)
  return value and tonumber(string.match(value, '^(%-?%d+) '))
end

-- put_fields_held(key, argv, from, to): the values the fields argv[from], argv[from + 2], ...
-- hold in hash <key> (false where none), and those fields.
local function put_fields_held(key, argv, from, to)
  local fields = {}
  for j = from, to, 2 do fields[#fields + 1] = argv[j] end
  return redis.call('HMGET', key, unpack(fields)), fields
end

-- put_fields(key, held, argv, from, to): set the field, value pairs argv[from..to] whose held
-- value (held[1], held[2], ... as put_fields_held read them) is not newer; held = false sets
-- them all without comparing (the stamp vouched for them).
local function put_fields(key, held, argv, from, to)
  if held == false then
    redis.call('HSET', key, unpack(argv, from, to))
    return 1
  end
  local winners = {}
  for j = from, to, 2 do
    local ts = held_ts(held[(j - from) / 2 + 1])
    if not ts or ts <= held_ts(argv[j + 1]) then
      winners[#winners + 1] = argv[j]
      winners[#winners + 1] = argv[j + 1]
    end
  end
  if #winners > 0 then redis.call('HSET', key, unpack(winners)) end
  return 1
end
