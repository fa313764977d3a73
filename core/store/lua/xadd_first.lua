-- XADDFIRST <stream> <hash> <field> <json> <xadd options...>: store <json> (a JSON array of the
-- entry's fields and values) in <hash> <field> unless an entry is stored there, then XADD the
-- stored one (Outputs.emit_first).

-- first_fields(stored): the fields and values of an entry stored by XADDFIRST (a JSON array of
-- strings, even length), or nil when the stored value is not one. The Python twin is
-- navstream.contract.records.parse_first.
local function first_fields(stored)
  local ok, values = pcall(cjson.decode, stored)
  if not ok or type(values) ~= 'table' or #values == 0 or #values % 2 ~= 0 then return nil end
  for _, v in ipairs(values) do
    if type(v) ~= 'string' then return nil end
  end
  return values
end

-- xadd_first(stream, hash, field, entry, argv, from, to): argv[from..to] are the XADD options.
local function xadd_first(stream, hash, field, entry, argv, from, to)
  local stored = redis.call('HGET', hash, field)
  if not stored then
    stored = entry
    redis.call('HSET', hash, field, stored)
  end
  local args = {}  -- the XADD options, then the stored fields (unpack expands only once)
  for j = from, to do args[#args + 1] = argv[j] end
  for _, v in ipairs(first_fields(stored)) do args[#args + 1] = v end
  return redis.call('XADD', stream, unpack(args))
end
