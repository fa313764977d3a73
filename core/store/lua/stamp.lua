-- STAMP <key> <seen> <mine>: SET key mine if it holds seen ('' = nothing), else '!' .. mine
-- (see Outputs.stamp).
local function stamp(key, seen, mine)
  if (redis.call('GET', key) or '') == seen then
    redis.call('SET', key, mine)
  else
    redis.call('SET', key, '!' .. mine)
  end
  return 1
end
