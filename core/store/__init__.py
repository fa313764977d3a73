"""Writing to Redis: the batch write and its Lua scripts, each write op implemented once."""
