-- fairshare.lua: per-producer waiting lists and the fair pick of the next job to create.
-- Loaded by workers/resilience/fairshare.py (FairShare); tested in
-- tests/workers/resilience/test_fairshare.py.
--
-- Every key carries one hash tag ({fair} on a Cluster): one slot per call. The per-class
-- and per-producer keys are built here from KEYS[1] (the prefix, ending in ':'), all in
-- that same slot.
--
--   <base>classes            set   "<producer>|<rank>" that may have jobs waiting
--   <base>w:<producer>|<rank> zset job_id -> enqueue time (FIFO within the class)
--   <base>lease              zset  job_id -> when a submit picked it (not yet claimed)
--   <base>lease_of           hash  job_id -> "<class>\t<enqueue score>\t<charge>" (to put
--                                  it back in line and give its producer the create back)
--   <base>finish             hash  producer -> finish tag (start-time fair queueing)
--   <base>f:<producer>       zset  job_id -> when it claimed its create (in flight)
--
-- Producer '' = jobs without a producer. Rank 0 high, 1 normal, 2 low.
--
-- KEYS[1]  base prefix '<prefix>:fair:{fair}:'
-- ARGV[1]  op
-- enqueued: 2 job, 3 producer, 4 rank, 5 now, 6.. weights (producer, weight). The job
--          waits (idempotent: ZADD NX); an idle producer's finish is raised to the others'.
-- take:    2 own job, 3 own producer, 4 own rank, 5 own job queued (1|0), 6 now,
--          7 lease_s, 8 cap (0 none), 9 flight ttl s, 10.. weights (producer, weight)
--          Returns {'direct'} when the own job is queued but neither waiting nor picked
--          (a retry, a job from before the lists: the caller submits it as it is);
--          {'pick', job, producer, rank} (the job is leased to the caller);
--          {'none', 'empty'} or {'none', 'capped', producer...} (all waiting producers
--          at their in-flight cap).
-- claimed: 2 job, 3 producer, 4 now, 5 cap: the picked job claimed its create (lease →
--   flight; kept in flight only when a cap is set).
-- release: 2 job: a picked job that is no longer queued (or lost its claim): forgotten.
-- put_back: 2 job: a picked job that may not create yet: back at its place in line, its
--          producer's finish tag given the charge back (no create was made).
-- left:    2 job, 3 producer, 4 rank: no longer waiting (cancelled, ended).
-- forget_flight: 2 producer, 3.. jobs no longer in flight.
-- in_flight: 2 producer: the producer's claimed jobs.
-- snapshot: {producer, rank, waiting, in_flight, ...} (leased jobs count as waiting).

local base = KEYS[1]
local op = ARGV[1]
local classes_key = base .. 'classes'
local lease_key = base .. 'lease'
local lease_of_key = base .. 'lease_of'
local finish_key = base .. 'finish'

local function wkey(class) return base .. 'w:' .. class end
local function fkey(producer) return base .. 'f:' .. producer end
local function split(class)
  local bar = string.find(class, '|', 1, true)
  return string.sub(class, 1, bar - 1), tonumber(string.sub(class, bar + 1))
end

-- A leased job back at its place in line, and the create it was charged given back to
-- its producer (info = "<class>\t<enqueue score>\t<charge>").
local function back_in_line(job, info)
  local t1 = string.find(info, '\t', 1, true)
  local t2 = string.find(info, '\t', t1 + 1, true)
  local class = string.sub(info, 1, t1 - 1)
  redis.call('ZADD', wkey(class), 'NX', string.sub(info, t1 + 1, t2 - 1), job)
  redis.call('SADD', classes_key, class)
  local producer, _ = split(class)
  local finish = tonumber(redis.call('HGET', finish_key, producer) or '0')
  redis.call('HSET', finish_key, producer, tostring(finish - tonumber(string.sub(info, t2 + 1))))
end

-- A lease ends: the job no longer counts toward its producer's cap through it (a claim
-- adds it back as in flight).
local function unlease(job)
  local info = redis.call('HGET', lease_of_key, job)
  if info then
    local producer, _ = split(string.sub(info, 1, string.find(info, '\t', 1, true) - 1))
    redis.call('ZREM', fkey(producer), job)
  end
  redis.call('ZREM', lease_key, job)
  redis.call('HDEL', lease_of_key, job)
end

-- A picked job whose picker died before claiming it goes back to its place in line.
local function heal(now, lease_s)
  local stale = redis.call('ZRANGEBYSCORE', lease_key, '-inf', '(' .. tostring(now - lease_s))
  for _, job in ipairs(stale) do
    local info = redis.call('HGET', lease_of_key, job)
    if info then back_in_line(job, info) end
    unlease(job)
  end
end


-- The start of the last pick of the least-served listed producer other than p: a
-- producer that becomes active starts no earlier (it banks nothing while idle).
local function level_for(p, weights)
  local level = nil
  for _, class in ipairs(redis.call('SMEMBERS', classes_key)) do
    local q, _ = split(class)
    if q ~= p and redis.call('ZCARD', wkey(class)) > 0 then
      local f = tonumber(redis.call('HGET', finish_key, q) or '0') - 1 / (weights[q] or 1)
      if level == nil or f < level then level = f end
    end
  end
  return level
end

if op == 'enqueued' then
  local producer = ARGV[3]
  local class = producer .. '|' .. ARGV[4]
  if not redis.call('ZSCORE', lease_key, ARGV[2]) then
    local listed = 0
    for r = 0, 2 do listed = listed + redis.call('ZCARD', wkey(producer .. '|' .. r)) end
    if listed == 0 then
      -- The producer was idle: it starts level with the others (no banked creates).
      local weights = {}
      for i = 6, #ARGV, 2 do weights[ARGV[i]] = tonumber(ARGV[i + 1]) end
      local level = level_for(producer, weights)
      local mine = tonumber(redis.call('HGET', finish_key, producer) or '0')
      if level ~= nil and level > mine then
        redis.call('HSET', finish_key, producer, tostring(level))
      end
    end
    redis.call('ZADD', wkey(class), 'NX', ARGV[5], ARGV[2])
    redis.call('SADD', classes_key, class)
  end
  return 1
end

if op == 'take' then
  local own, own_class = ARGV[2], ARGV[3] .. '|' .. ARGV[4]
  local own_queued = ARGV[5] == '1'
  local now, lease_s = tonumber(ARGV[6]), tonumber(ARGV[7])
  local cap, flight_ttl = tonumber(ARGV[8]), tonumber(ARGV[9])
  local weights = {}
  for i = 10, #ARGV, 2 do weights[ARGV[i]] = tonumber(ARGV[i + 1]) end
  heal(now, lease_s)
  if own_queued and not redis.call('ZSCORE', wkey(own_class), own)
      and not redis.call('ZSCORE', lease_key, own) then
    return {'direct'}
  end

  -- Each producer's first class with jobs (high before normal before low).
  local best = {}
  for _, class in ipairs(redis.call('SMEMBERS', classes_key)) do
    if redis.call('ZCARD', wkey(class)) == 0 then
      redis.call('SREM', classes_key, class)
    else
      local p, r = split(class)
      if best[p] == nil or r < best[p] then best[p] = r end
    end
  end

  -- Start-time fair queueing: a producer's next job starts at the finish of its
  -- previous pick and finishes 1/weight later; the smallest start goes. (A producer
  -- that was idle was set level with the others when its job was listed: 'enqueued'.)
  -- No virtual clock moves here: a take put back (the limiter said wait) gives its
  -- charge back and leaves nothing else changed.
  local chosen, chosen_start = nil, nil
  local capped = {}
  for p, _ in pairs(best) do
    local blocked = false
    if cap > 0 then
      local fk = fkey(p)
      redis.call('ZREMRANGEBYSCORE', fk, '-inf', '(' .. tostring(now - flight_ttl))
      blocked = redis.call('ZCARD', fk) >= cap
    end
    if blocked then
      table.insert(capped, p)
    else
      local start = tonumber(redis.call('HGET', finish_key, p) or '0')
      if chosen == nil or start < chosen_start or (start == chosen_start and p < chosen) then
        chosen, chosen_start = p, start
      end
    end
  end
  if chosen == nil then
    if #capped > 0 then
      local out = {'none', 'capped'}
      for _, p in ipairs(capped) do table.insert(out, p) end
      return out
    end
    return {'none', 'empty'}
  end

  local class = chosen .. '|' .. best[chosen]
  local head = redis.call('ZRANGE', wkey(class), 0, 0, 'WITHSCORES')
  local job, score = head[1], head[2]
  redis.call('ZREM', wkey(class), job)
  local charge = 1 / (weights[chosen] or 1)
  redis.call('ZADD', lease_key, now, job)
  redis.call('HSET', lease_of_key, job, class .. '\t' .. score .. '\t' .. tostring(charge))
  if cap > 0 then redis.call('ZADD', fkey(chosen), now, job) end  -- counts toward the cap
  redis.call('HSET', finish_key, chosen, tostring(chosen_start + charge))
  return {'pick', job, chosen, best[chosen]}
end

if op == 'claimed' then
  unlease(ARGV[2])
  -- In flight counts only for a cap: without one nothing would ever trim the set.
  if tonumber(ARGV[5] or '0') > 0 then
    redis.call('ZADD', fkey(ARGV[3]), tonumber(ARGV[4]), ARGV[2])
  end
  return 1
end

if op == 'release' then
  unlease(ARGV[2])
  return 1
end

if op == 'put_back' then
  local info = redis.call('HGET', lease_of_key, ARGV[2])
  if info then back_in_line(ARGV[2], info) end
  unlease(ARGV[2])
  return 1
end

if op == 'left' then
  redis.call('ZREM', wkey(ARGV[3] .. '|' .. ARGV[4]), ARGV[2])
  unlease(ARGV[2])
  redis.call('ZREM', fkey(ARGV[3]), ARGV[2])
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
  local out = {}
  local leased = {}
  for _, info in ipairs(redis.call('HVALS', lease_of_key)) do
    local class = string.sub(info, 1, string.find(info, '\t', 1, true) - 1)
    leased[class] = (leased[class] or 0) + 1
  end
  local seen = {}
  for _, class in ipairs(redis.call('SMEMBERS', classes_key)) do
    seen[class] = true
  end
  for class, _ in pairs(leased) do seen[class] = true end
  for class, _ in pairs(seen) do
    local n = redis.call('ZCARD', wkey(class)) + (leased[class] or 0)
    if n > 0 then
      local p, r = split(class)
      table.insert(out, p)
      table.insert(out, tostring(r))
      table.insert(out, n)
      table.insert(out, redis.call('ZCARD', fkey(p)))
    end
  end
  return out
end

return redis.error_reply('fairshare.lua: unknown op ' .. tostring(op))
