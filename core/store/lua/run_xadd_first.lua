-- KEYS[1] = stream, KEYS[2] = hash, ARGV[1] = field, ARGV[2] = entry as JSON, ARGV[3..] = XADD
-- options (after xadd_first.lua).
return xadd_first(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV, 3, #ARGV)
