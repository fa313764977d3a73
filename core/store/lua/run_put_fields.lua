-- KEYS[1] = hash, ARGV = field, value pairs, each value "<ts> <payload>" (after put_fields.lua):
-- every member compared, as without a stamp that vouches for them.
return put_fields(KEYS[1], (put_fields_held(KEYS[1], ARGV, 1, #ARGV)), ARGV, 1, #ARGV)
