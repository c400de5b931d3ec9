-- deadletter_purge.lua: remove every dead letter refused up to a time, atomically.
-- Loaded by workers/deadletters.py (DeadLetterStore.purge, `nbq dead purge`) after
-- deadletter_common.lua, whose header documents KEYS[1..7] and ARGV[1]; tested directly
-- in tests/workers/test_deadletters.py.
--
-- Every key shares the hash tag {<prefix>:dead}: one slot, as Redis Cluster requires.
--
-- KEYS[1]  string  the entries (see deadletter_common.lua for KEYS[2..7])
--
-- ARGV[1]  int     overhead: bytes counted per letter besides its JSON
-- ARGV[2]  string  cutoff: epoch seconds; letters refused at or before it are removed
-- ARGV[3]  string  id: when given (not ""), remove only this letter (`nbq dead replay`)
--
-- Returns the number of letters removed. The `dropped` total is kept.
if ARGV[3] ~= '' then
  if redis.call('HEXISTS', entries, ARGV[3]) == 0 then return 0 end
  remove(ARGV[3])
  return 1
end
local removed = 0
repeat
  local n = remove_older(ARGV[2], 1000)
  removed = removed + n
until n < 1000
if redis.call('ZCARD', index) == 0 then  -- empty: start the byte total exactly again
  redis.call('HDEL', meta, 'bytes', 'pinned', 'pinned_bytes')
  redis.call('DEL', tags, byreason, counts, firsts)
end
return removed
