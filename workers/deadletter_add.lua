-- deadletter_add.lua: store one dead letter and keep the store bounded, atomically.
-- Loaded by workers/deadletters.py (DeadLetterStore.add) after deadletter_common.lua,
-- whose header documents KEYS[1..7] and ARGV[1]; tested directly in
-- tests/workers/test_deadletters.py.
--
-- Every key shares the hash tag {<prefix>:dead}: one slot, as Redis Cluster requires.
--
-- KEYS[1]  string  the entries (see deadletter_common.lua for KEYS[2..7])
--
-- ARGV[1]  int     overhead: bytes counted per letter besides its JSON
-- ARGV[2]  string  id: the letter's id (the hash field and the index member)
-- ARGV[3]  string  at: when it was refused, epoch seconds (its index score)
-- ARGV[4]  string  sortkey: `at` as a fixed-width string (orders a reason's letters)
-- ARGV[5]  string  reason: the refusal reason (no control characters: escaped by the caller)
-- ARGV[6]  string  doc: the letter as JSON (capped and redacted by the caller); its length
--                  is what the byte bound counts
-- ARGV[7]  string  cutoff: epoch seconds; letters refused before it are dropped
--                  (now - NBQ_DEAD_LETTER_RETENTION_S), at most 1000 per call
-- ARGV[8]  int     max_entries: the count bound (NBQ_DEAD_LETTER_MAX)
-- ARGV[9]  int     max_bytes: the byte bound (NBQ_DEAD_LETTER_MAX_BYTES)
-- ARGV[10] int     firsts_per_reason: the first letters of each reason kept (pinned)
--                  while the bounds drop others; pinned letters use at most half of
--                  each bound
--
-- Over a bound, the oldest unpinned letter of the reason with the most unpinned letters
-- goes first: a flood of one reason drops only its own letters, never a reason's first
-- ones, and the newest of each reason stay.
--
-- Returns {dropped for their age, dropped for the bounds}.
local id, at, sortkey, reason = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local doc, cutoff = ARGV[6], ARGV[7]
local max_entries, max_bytes = tonumber(ARGV[8]), tonumber(ARGV[9])
local firsts_per_reason = tonumber(ARGV[10])

local aged = remove_older('(' .. cutoff, 1000)
local cost = #doc + overhead
redis.call('HSET', entries, id, doc)
redis.call('ZADD', index, at, id)
redis.call('HINCRBY', meta, 'bytes', cost)
local pinned = tonumber(redis.call('HGET', meta, 'pinned') or '0')
local pinned_bytes = tonumber(redis.call('HGET', meta, 'pinned_bytes') or '0')
if tonumber(redis.call('HGET', firsts, reason) or '0') < firsts_per_reason
    and (pinned + 1) * 2 <= max_entries and (pinned_bytes + cost) * 2 <= max_bytes then
  redis.call('HSET', tags, id, '1|' .. sortkey .. '|' .. reason)
  redis.call('HINCRBY', firsts, reason, 1)
  redis.call('HINCRBY', meta, 'pinned', 1)
  redis.call('HINCRBY', meta, 'pinned_bytes', cost)
else
  redis.call('HSET', tags, id, '0|' .. sortkey .. '|' .. reason)
  redis.call('ZADD', byreason, 0, reason .. '\1' .. sortkey .. '\1' .. id)
  redis.call('HINCRBY', counts, reason, 1)
end

local dropped = 0
while redis.call('ZCARD', index) > max_entries
    or tonumber(redis.call('HGET', meta, 'bytes')) > max_bytes do
  local victim = nil
  local most, largest = nil, 0
  local all = redis.call('HGETALL', counts)
  for i = 1, #all, 2 do
    local n = tonumber(all[i + 1])
    if n > largest then most, largest = all[i], n end
  end
  if most then
    local first = redis.call('ZRANGEBYLEX', byreason, '[' .. most .. '\1', '(' .. most .. '\2',
      'LIMIT', 0, 1)[1]
    if first then victim = string.match(first, '^[^\1]*\1[^\1]*\1(.*)$') end
  end
  if not victim then  -- letters stored before the byte bound existed: the oldest untagged
    for _, old_id in ipairs(redis.call('ZRANGE', index, 0, 199)) do
      if redis.call('HEXISTS', tags, old_id) == 0 then victim = old_id; break end
    end
  end
  if not victim then break end
  remove(victim)
  dropped = dropped + 1
end
if dropped > 0 then redis.call('HINCRBY', meta, 'dropped', dropped) end
return {aged, dropped}
