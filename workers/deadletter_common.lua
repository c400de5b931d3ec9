-- deadletter_common.lua: the bookkeeping shared by deadletter_add.lua and
-- deadletter_purge.lua (workers/deadletters.py prepends it to both).
--
-- KEYS[1]  string  the entries, a hash: {<prefix>:dead}:entries (letter id -> JSON)
-- KEYS[2]  string  the index, a sorted set: {<prefix>:dead}:index (letter id by time)
-- KEYS[3]  string  the totals, a hash: {<prefix>:dead}:meta (bytes, pinned, pinned_bytes,
--                  dropped: letters removed by the bounds, never reset)
-- KEYS[4]  string  the tags, a hash: {<prefix>:dead}:tags (letter id -> "<p>|<sortkey>|<reason>",
--                  p = 1 for a pinned first letter of its reason, 0 otherwise)
-- KEYS[5]  string  the unpinned letters by reason and age, a sorted set by lex:
--                  {<prefix>:dead}:byreason ("<reason>\1<sortkey>\1<id>", all scores 0)
-- KEYS[6]  string  unpinned letters per reason, a hash: {<prefix>:dead}:counts
-- KEYS[7]  string  pinned letters per reason, a hash: {<prefix>:dead}:firsts
--
-- ARGV[1]  int     overhead: bytes counted per letter besides its JSON (fields, index)
--
-- Returns nothing itself: it defines remove(id) and remove_older(cutoff, limit).
local entries, index, meta, tags = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local byreason, counts, firsts = KEYS[5], KEYS[6], KEYS[7]
local overhead = tonumber(ARGV[1])

-- Remove one letter and everything that accounts for it.
local function remove(id)
  local cost = redis.call('HSTRLEN', entries, id)
  redis.call('HDEL', entries, id); redis.call('ZREM', index, id)
  local tag = redis.call('HGET', tags, id)
  local bytes = redis.call('HINCRBY', meta, 'bytes', -(cost + overhead))
  if bytes < 0 then redis.call('HSET', meta, 'bytes', 0) end
  if not tag then return end  -- stored before the byte bound existed
  redis.call('HDEL', tags, id)
  local pinned, sortkey, reason = string.match(tag, '^(%d)|([^|]*)|(.*)$')
  if pinned == '1' then
    redis.call('HINCRBY', firsts, reason, -1)
    redis.call('HINCRBY', meta, 'pinned', -1)
    redis.call('HINCRBY', meta, 'pinned_bytes', -(cost + overhead))
  else
    redis.call('ZREM', byreason, reason .. '\1' .. sortkey .. '\1' .. id)
    if redis.call('HINCRBY', counts, reason, -1) <= 0 then redis.call('HDEL', counts, reason) end
  end
end

-- Remove every letter refused before `cutoff` (at most `limit`); returns how many.
local function remove_older(cutoff, limit)
  local old = redis.call('ZRANGEBYSCORE', index, '-inf', cutoff, 'LIMIT', 0, limit)
  for _, old_id in ipairs(old) do remove(old_id) end
  return #old
end
