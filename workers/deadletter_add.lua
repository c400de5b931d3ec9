-- deadletter_add.lua: store one dead letter and keep the store bounded, atomically.
-- Loaded by workers/deadletters.py (DeadLetterStore.add); tested directly in
-- tests/workers/test_deadletters.py.
--
-- Both keys share the hash tag {<prefix>:dead}: one slot, as Redis Cluster requires.
--
-- KEYS[1]  string  the entries, a hash: {<prefix>:dead}:entries (letter id -> JSON)
-- KEYS[2]  string  the index, a sorted set: {<prefix>:dead}:index (letter id by time)
--
-- ARGV[1]  string  id: the letter's id (the hash field and the index member)
-- ARGV[2]  string  at: when it was refused, epoch seconds (its index score)
-- ARGV[3]  string  doc: the letter as JSON (capped and redacted by the caller)
-- ARGV[4]  string  cutoff: epoch seconds; letters refused before it are dropped
--                  (now - NBQ_DEAD_LETTER_RETENTION_S), at most 1000 per call
-- ARGV[5]  int     max_entries: the bound (NBQ_DEAD_LETTER_MAX); the oldest go first
--
-- Returns the number of letters dropped for their age (not those dropped for the bound).
local entries, index = KEYS[1], KEYS[2]
local id, at, doc = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local cutoff, max_entries = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('HSET', entries, id, doc)
redis.call('ZADD', index, at, id)
local old = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. cutoff, 'LIMIT', 0, 1000)
for _, old_id in ipairs(old) do
  redis.call('HDEL', entries, old_id); redis.call('ZREM', index, old_id)
end
local extra = redis.call('ZCARD', index) - max_entries
if extra > 0 then
  local oldest = redis.call('ZRANGE', index, 0, extra - 1)
  for _, old_id in ipairs(oldest) do
    redis.call('HDEL', entries, old_id); redis.call('ZREM', index, old_id)
  end
end
return #old
