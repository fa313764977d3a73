-- KEYS[1] = stream, KEYS[2] = marker, ARGV[1] = version, ARGV[2] = ttl ms, ARGV[3] = now ms,
-- ARGV[4..] = XADD arguments (after xadd_once.lua).
return xadd_once(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV, 4, #ARGV)
