-- XADDONCE <stream> <marker> <version> <ttl> <now> <xadd args...>: XADD unless the marker holds
-- that version and has not run out (by the consumer's clock), then set the marker: one entry
-- per version and period, across consumers.

-- once_due(marker, version, ttl, now): the marker's new end (and the marker set) unless it holds
-- this version and runs until after `now`, then minus its end. The period is judged by the
-- consumer's clock (`now`, epoch ms), not Redis's, so a simulated clock (the demo, tests)
-- behaves like the real one; PX only lets Redis drop the marker once it cannot matter.
local function once_due(marker, version, ttl, now)
  local current = redis.call('GET', marker)
  if current then
    local sep = string.find(current, ' ', 1, true)
    local ends = sep and tonumber(string.sub(current, 1, sep - 1))
    if ends and string.sub(current, sep + 1) == version and ends > tonumber(now) then
      return -ends
    end
  end
  local ends = tonumber(now) + tonumber(ttl)
  redis.call('SET', marker, ends .. ' ' .. version, 'PX', ttl)
  return ends
end

-- xadd_once(stream, marker, version, ttl, now, argv, from, to): argv[from..to] are the XADD
-- arguments. Returns the marker's end (ms), negated when the entry was not written.
local function xadd_once(stream, marker, version, ttl, now, argv, from, to)
  local mark = once_due(marker, version, ttl, now)
  if mark > 0 then redis.call('XADD', stream, unpack(argv, from, to)) end
  return mark
end
