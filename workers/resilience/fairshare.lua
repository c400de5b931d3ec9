-- fairshare.lua: the submit-side gate — weighted fair share of creates between producers,
-- priorities within a producer, a per-producer in-flight cap. Loaded by
-- workers/resilience/fairshare.py (FairShare); tested in tests/workers/resilience/.
--
-- Every key carries one hash tag ({fair} on a Cluster): one slot per call. The per-class
-- and per-producer keys are built here from KEYS[1] (the prefix, ending in ':'), all in
-- that same slot.
--
--   <base>classes            set   "<producer>|<priority>" with jobs waiting
--   <base>w:<producer>|<pri> zset  job_id -> last time it asked the gate (epoch s)
--   <base>e:<producer>|<pri> zset  job_id -> enqueued, not yet asked (epoch s)
--   <base>vt                 hash  producer -> virtual time (creates / weight)
--   <base>f:<producer>       zset  job_id -> when it claimed its create (in flight)
--
-- A job "waits" while it asks the gate; one that has not asked for ARGV idle_s is no
-- longer counted (a leaked entry — a job cancelled or lost — heals itself), so the gate
-- never holds a producer back for jobs that are not there. Producer '' = no producer.
--
-- KEYS[1]  base prefix '<prefix>:fair:{fair}:'
-- ARGV[1]  op     admit | refund | claimed | left | forget_flight | snapshot
-- admit:   ARGV 2 job, 3 producer, 4 priority rank (0 high, 1 normal, 2 low), 5 now,
--          6 idle_s, 7 in-flight cap (0 none), 8 in-flight ttl s, 9 grace_s,
--          10.. weights as producer, weight pairs (the configured ones; others weigh 1)
--          Returns {1, 'ok'} or {0, reason, lead} — reason fair_share | priority |
--          producer_in_flight; lead = how many creates (in weight units) ahead it is.
-- enqueued: ARGV 2 job, 3 producer, 4 priority rank, 5 now: the job waits from now on.
-- refund:  ARGV 2 job, 3 producer, 4 weight: an admitted job did not create (the rate
--          limiter said wait): its virtual time is given back.
-- claimed: ARGV 2 job, 3 producer, 4 priority rank, 5 now: the job claimed its create:
--          no longer waiting; in flight.
-- left:    ARGV 2 job, 3 producer, 4 priority rank: no longer waiting (ended, cancelled).
-- forget_flight: ARGV 2 producer, 3.. jobs no longer in flight.
-- snapshot: ARGV 2 now, 3 idle_s: {producer, priority, waiting, vt, in_flight, ...}

local base = KEYS[1]
local op = ARGV[1]
local classes_key = base .. 'classes'
local vt_key = base .. 'vt'

local function wkey(class) return base .. 'w:' .. class end
local function ekey(class) return base .. 'e:' .. class end
local function fkey(producer) return base .. 'f:' .. producer end
local function split(class)
  local bar = string.find(class, '|', 1, true)
  return string.sub(class, 1, bar - 1), tonumber(string.sub(class, bar + 1))
end

-- Waiting jobs per class (stale entries dropped): {class -> count}. A job enqueued but
-- not yet asking (its message still in the queue) counts once it waited grace_s: others
-- keep the create rate meanwhile (work-conserving), then leave it its turn.
local function waiting(now, idle_s, grace_s)
  local out = {}
  for _, class in ipairs(redis.call('SMEMBERS', classes_key)) do
    local key, ek = wkey(class), ekey(class)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. tostring(now - idle_s))
    redis.call('ZREMRANGEBYSCORE', ek, '-inf', '(' .. tostring(now - idle_s))
    local n = redis.call('ZCARD', key)
    local e = redis.call('ZCARD', ek)
    if n == 0 and e == 0 then
      redis.call('SREM', classes_key, class)
    else
      local due = redis.call('ZCOUNT', ek, '-inf', tostring(now - grace_s))
      if n + due > 0 then out[class] = n + e end
    end
  end
  return out
end

if op == 'admit' then
  local job, producer, rank = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local now, idle_s = tonumber(ARGV[5]), tonumber(ARGV[6])
  local cap, flight_ttl = tonumber(ARGV[7]), tonumber(ARGV[8])
  local grace_s = tonumber(ARGV[9])
  local weights = {}
  for i = 10, #ARGV, 2 do weights[ARGV[i]] = tonumber(ARGV[i + 1]) end
  local function weight(p) return weights[p] or 1 end

  local class = producer .. '|' .. rank
  redis.call('ZREM', ekey(class), job)
  redis.call('ZADD', wkey(class), now, job)
  redis.call('SADD', classes_key, class)
  local counts = waiting(now, idle_s, grace_s)

  -- Priorities within the producer: a higher class of its own waiting goes first.
  for other, _ in pairs(counts) do
    local p, r = split(other)
    if p == producer and r < rank then return {0, 'priority', '0'} end
  end

  -- The producer's cap on jobs between claim and stored (stale claims expire).
  if cap > 0 then
    local fk = fkey(producer)
    redis.call('ZREMRANGEBYSCORE', fk, '-inf', '(' .. tostring(now - flight_ttl))
    if redis.call('ZCARD', fk) >= cap and not redis.call('ZSCORE', fk, job) then
      return {0, 'producer_in_flight', '0'}
    end
  end

  -- Weighted fair share (start-time fair queueing on the creates): the producer may
  -- create while its virtual time is not ahead of every other waiting producer's.
  local others = {}
  for other, _ in pairs(counts) do
    local p, _ = split(other)
    if p ~= producer then others[p] = true end
  end
  local w = weight(producer)
  local mine = tonumber(redis.call('HGET', vt_key, producer) or '0')
  local floor, step = nil, 0
  for p, _ in pairs(others) do
    local v = tonumber(redis.call('HGET', vt_key, p) or '0')
    if floor == nil or v < floor then floor = v end
    if 1 / weight(p) > step then step = 1 / weight(p) end
  end
  if floor ~= nil then
    -- No banking: a producer that was idle starts level with the others, not owed the
    -- creates it did not ask for (behind by at most one create of each side).
    if mine < floor - 1 / w - step then mine = floor - 1 / w - step end
    if mine > floor + 1e-9 then
      redis.call('HSET', vt_key, producer, tostring(mine))
      return {0, 'fair_share', tostring(mine - floor)}
    end
  else
    -- Alone: everything is its own (work-conserving); keep the clocks level.
    local top = mine
    for _, v in ipairs(redis.call('HVALS', vt_key)) do
      if tonumber(v) > top then top = tonumber(v) end
    end
    mine = top
  end
  redis.call('HSET', vt_key, producer, tostring(mine + 1 / w))
  return {1, 'ok', '0'}
end

if op == 'enqueued' then
  -- A new job waits from its enqueue, before its message reaches a worker: a producer
  -- whose first jobs sit behind another's backlog in the queue already counts.
  local class = ARGV[3] .. '|' .. ARGV[4]
  if not redis.call('ZSCORE', wkey(class), ARGV[2]) then
    redis.call('ZADD', ekey(class), 'NX', ARGV[5], ARGV[2])
  end
  redis.call('SADD', classes_key, class)
  return 1
end

if op == 'refund' then
  local producer, w = ARGV[3], tonumber(ARGV[4])
  local v = tonumber(redis.call('HGET', vt_key, producer) or '0')
  redis.call('HSET', vt_key, producer, tostring(v - 1 / w))
  return 1
end

if op == 'claimed' or op == 'left' then
  local job, producer, rank = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local class = producer .. '|' .. rank
  redis.call('ZREM', wkey(class), job)
  redis.call('ZREM', ekey(class), job)
  if redis.call('ZCARD', wkey(class)) + redis.call('ZCARD', ekey(class)) == 0 then
    redis.call('SREM', classes_key, class)
  end
  if op == 'claimed' then
    redis.call('ZADD', fkey(producer), tonumber(ARGV[5]), job)
  else
    redis.call('ZREM', fkey(producer), job)
  end
  return 1
end

if op == 'forget_flight' then
  local fk = fkey(ARGV[2])
  for i = 3, #ARGV do redis.call('ZREM', fk, ARGV[i]) end
  return redis.call('ZCARD', fk)
end

if op == 'in_flight' then
  return redis.call('ZRANGE', fkey(ARGV[2]), 0, -1)
end

if op == 'snapshot' then
  local now, idle_s = tonumber(ARGV[2]), tonumber(ARGV[3])
  local out = {}
  for class, n in pairs(waiting(now, idle_s, 0)) do
    local p, r = split(class)
    table.insert(out, p)
    table.insert(out, tostring(r))
    table.insert(out, n)
    table.insert(out, redis.call('HGET', vt_key, p) or '0')
    table.insert(out, redis.call('ZCARD', fkey(p)))
  end
  return out
end

return redis.error_reply('fairshare.lua: unknown op ' .. tostring(op))
