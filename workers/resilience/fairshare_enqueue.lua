-- fairshare_enqueue.lua: a new job waits on its producer's fair-share list.
-- The one op of fairshare.lua's layout (see its header) an enqueue runs: kept apart and
-- small because the producer sends it as EVAL in its one-round-trip pipeline (a pipeline
-- another library executes cannot recover from NOSCRIPT), so its text travels with every
-- enqueue. Loaded by workers/resilience/fairshare.py (FairShare.enqueued); tested in
-- tests/workers/resilience/test_fairshare.py.
--
-- KEYS  1 base prefix '<prefix>:fair:{fair}:', 2 ready, 3 finish, 4 taken (fairshare.lua's)
-- ARGV  1 job, 2 producer, 3 rank, 4 enqueue time, 5 cap, 6.. weights (producer, weight)
-- The job waits (idempotent: ZADD NX; under a cap not a job in flight, whose listing,
-- taken and released, would drop its in-flight entry: one create past the cap); an idle
-- producer starts level with the others. A job listed again while taken is skipped by the
-- take (HSETNX); one listed again after its claim is released by the submit stage.
local base, ready_key, finish_key = KEYS[1], KEYS[2], KEYS[3]
local job, producer, cap = ARGV[1], ARGV[2], tonumber(ARGV[5])
local RANK_SPAN = 1e10  -- as in fairshare.lua

if cap > 0 and redis.call('ZSCORE', base .. 'f:' .. producer, job) then return 0 end
local score = tonumber(ARGV[3]) * RANK_SPAN + tonumber(ARGV[4])
if redis.call('ZADD', base .. 'wait:' .. producer, 'NX', score, job) == 0 then return 0 end
if redis.call('ZSCORE', ready_key, producer) then return 1 end

-- The producer was idle: it starts no earlier than the start of the last pick of the
-- least-served listed producer (it banks no creates while idle).
local weights = {}
for i = 6, #ARGV, 2 do weights[ARGV[i]] = tonumber(ARGV[i + 1]) end
local tag = tonumber(redis.call('HGET', finish_key, producer) or '0')
local others = redis.call('ZRANGE', ready_key, 0, -1, 'WITHSCORES')
local level = nil
for i = 1, #others, 2 do
  local f = tonumber(others[i + 1]) - 1 / (weights[others[i]] or 1)
  if level == nil or f < level then level = f end
end
if level ~= nil and level > tag then tag = level end
redis.call('ZADD', ready_key, tag, producer)
return 1
