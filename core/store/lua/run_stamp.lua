-- KEYS[1] = stamp, ARGV[1] = the stamp read, ARGV[2] = the new one (after stamp.lua).
return stamp(KEYS[1], ARGV[1], ARGV[2])
