-- deadletter_purge.lua: remove every dead letter refused up to a time, atomically.
-- Loaded by workers/deadletters.py (DeadLetterStore.purge, `nbq dead purge`); tested
-- directly in tests/workers/test_deadletters.py.
--
-- Both keys share the hash tag {<prefix>:dead}: one slot, as Redis Cluster requires.
--
-- KEYS[1]  string  the entries, a hash: {<prefix>:dead}:entries (letter id -> JSON)
-- KEYS[2]  string  the index, a sorted set: {<prefix>:dead}:index (letter id by time)
--
-- ARGV[1]  string  cutoff: epoch seconds; letters refused at or before it are removed
--
-- Returns the number of letters removed.
local entries, index = KEYS[1], KEYS[2]
local cutoff = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', index, '-inf', cutoff)
for _, id in ipairs(ids) do
  redis.call('HDEL', entries, id); redis.call('ZREM', index, id)
end
return #ids
