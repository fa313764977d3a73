-- KEYS[1] = hash, ARGV[1] = ts, ARGV[2..] = field, value pairs (after put_latest.lua).
return put_latest(KEYS[1], ARGV[1], ARGV, 2, #ARGV)
