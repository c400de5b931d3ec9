-- fairshare.lua: per-producer waiting lists and the fair pick of the next job to create.
-- Loaded by workers/resilience/fairshare.py (FairShare); tested in
-- tests/workers/resilience/test_fairshare.py.
--
-- Every key carries one hash tag ({fair} on a Cluster): one slot per call. KEYS holds the
-- fixed keys; a producer's own keys are built here from the prefix (KEYS[1]), in the same
-- slot by its hash tag (which producers a call touches is known only inside it).
--
--   <base>ready            zset producer -> start tag of its next pick; every producer
--                               with jobs listed is in it (one whose list emptied leaves at
--                               the next take that reaches it, its tag kept in finish)
--   <base>finish           hash producer -> start tag of an idle producer's next pick
--   <base>wait:<producer>  zset job_id -> rank * 1e10 + enqueue time (0 high, 1 normal,
--                               2 low; FIFO within a rank): the producer's waiting jobs
--   <base>taken            hash job_id -> "<producer>\t<score>\t<charge>\t<f>\t<seen>"
--                               a taken job not yet claimed (f = 1: the take put it in
--                               the producer's in-flight set; seen: when a heal first
--                               saw the lease, empty before)
--   <base>f:<producer>     zset job_id -> when it was taken / claimed (in flight; written
--                               only under a cap)
--
-- Producer '' = jobs without a producer. Times are Redis's (TIME), except the enqueue time
-- (the producer's clock: it only orders one producer's jobs). A take reads no clock
-- unless it heals or a cap is set: a lease's age is counted from the first heal that saw
-- it (so it lasts lease_s at least, and at most lease_s + the time between heals).
--
-- KEYS  1 base prefix '<prefix>:fair:{fair}:', 2 ready, 3 finish, 4 taken
-- A new job is listed by fairshare_enqueue.lua (the enqueue sends its text: kept small).
-- ARGV[1] op
-- take:    2 own job, 3 own producer, 4 own job queued (1|0), 5 lease_s, 6 heal (1|0),
--          7 cap (0 none), 8 flight ttl s, 9.. weights (producer, weight)
--          Returns {'direct'} when the own job is queued but neither waiting nor taken
--          (a retry, a job from before the lists: the caller submits it as it is);
--          {'pick', job, producer, rank} (the job is leased to the caller);
--          {'none', 'empty'} or {'none', 'capped', producer...} (all waiting producers
--          at their in-flight cap). Expired leases go back in line when heal is 1 and
--          whenever nothing else could be taken.
-- claimed: 2 job, 3 producer, 4 cap: the taken job claimed its create (lease -> in flight,
--          kept only under a cap). Without a cap the caller just deletes the lease field.
-- release: 2 job: a taken job that will not be created by this take (no longer queued,
--          lost its claim, over budget): forgotten, its producer given the charge back.
-- put_back: 2 job: a taken job that may not create yet: back at its place in line, its
--          producer given the charge back (no create was made).
-- left:    2 job, 3 producer: no longer waiting (cancelled, failed): off its list, its
--          lease (charge given back) and in-flight entry dropped.
-- forget_flight: 2 producer, 3.. jobs no longer in flight.
-- in_flight: 2 producer: the producer's claimed jobs.
-- snapshot: {producer, rank, waiting, in_flight, ...} (leased jobs count as waiting).
-- migrate: the layout before this one (per-class lists w:<producer>|<rank>, a classes
--          set, leases in lease + lease_of) moved into this one, once: its leases back
--          in line with their charge given back. finish and f:<producer> are the same.

local base = KEYS[1]
local ready_key, finish_key, lease_key = KEYS[2], KEYS[3], KEYS[4]
local op = ARGV[1]
local RANK_SPAN = 1e10  -- a rank's band of scores: enqueue times (epoch s) stay below it

local function wkey(producer) return base .. 'wait:' .. producer end
local function fkey(producer) return base .. 'f:' .. producer end

local function now_s()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6
end

local function weights_from(first)
  local weights = {}
  for i = first, #ARGV, 2 do weights[ARGV[i]] = tonumber(ARGV[i + 1]) end
  return weights
end

-- "<producer>\t<score>\t<charge>\t<f>\t<seen>" -> producer, score, charge, f, seen.
local function parse_lease(info)
  local parts = {}
  for part in string.gmatch(info .. '\t', '([^\t]*)\t') do table.insert(parts, part) end
  return parts[1], parts[2], tonumber(parts[3]), parts[4] == '1', tonumber(parts[5])
end

-- The producer's next start moved by delta (a charge given back: negative), whether it is
-- listed (ready) or idle (finish). relist: it has a job listed again (it joins ready at
-- its own tag, no level-up: the job was listed before its take).
local function move_tag(producer, delta, relist)
  local tag = redis.call('ZSCORE', ready_key, producer)
  if tag then
    redis.call('ZINCRBY', ready_key, delta, producer)
    return
  end
  tag = tonumber(redis.call('HGET', finish_key, producer) or '0') + delta
  if relist then
    redis.call('ZADD', ready_key, tag, producer)
  else
    redis.call('HSET', finish_key, producer, tostring(tag))
  end
end

-- A lease ends without a create: the producer gets its charge back, the job its place in
-- line (relist) or nothing, and the in-flight entry the take added goes.
local function end_lease(job, relist)
  local info = redis.call('HGET', lease_key, job)
  if not info then return end
  local producer, score, charge, flight = parse_lease(info)
  redis.call('HDEL', lease_key, job)
  if relist then redis.call('ZADD', wkey(producer), 'NX', score, job) end
  move_tag(producer, -charge, relist)
  if flight then redis.call('ZREM', fkey(producer), job) end
end

-- Jobs whose taker died before claiming them back in line: a lease first seen by an
-- earlier heal lease_s ago or more. A lease seen for the first time is marked.
local function heal(now, lease_s)
  local healed = 0
  local all = redis.call('HGETALL', lease_key)
  for i = 1, #all, 2 do
    local info = all[i + 1]
    local seen = select(5, parse_lease(info))
    if seen == nil then
      redis.call('HSET', lease_key, all[i], string.gsub(info, '\t[^\t]*$', '') .. '\t' .. tostring(now))
    elseif seen <= now - lease_s then
      end_lease(all[i], true)
      healed = healed + 1
    end
  end
  return healed
end

-- A producer whose list emptied leaves ready; its tag is kept for when it comes back.
local function went_idle(producer, tag)
  redis.call('ZREM', ready_key, producer)
  redis.call('HSET', finish_key, producer, tag)
end

-- The listed producer whose next pick starts first and is not at its cap: producer, tag;
-- or nil and the capped producers. Capped producers found with nothing listed leave ready
-- (an uncapped one is found empty by the take).
local function fairest(clock, cap, flight_ttl)
  if cap <= 0 then
    local head = redis.call('ZRANGE', ready_key, 0, 0, 'WITHSCORES')
    if #head == 0 then return nil, {} end
    return head[1], tonumber(head[2])
  end
  local capped = {}
  local now = clock()
  local all = redis.call('ZRANGE', ready_key, 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    local p = all[i]
    local fk = fkey(p)
    redis.call('ZREMRANGEBYSCORE', fk, '-inf', '(' .. tostring(now - flight_ttl))
    if redis.call('ZCARD', fk) < cap then return p, tonumber(all[i + 1]) end
    if redis.call('ZCARD', wkey(p)) == 0 then
      went_idle(p, all[i + 1])
    else
      table.insert(capped, p)
    end
  end
  return nil, capped
end

-- The own job is queued but neither listed nor taken: submitted as it is.
local function own_is_direct()
  return ARGV[4] == '1' and not redis.call('ZSCORE', wkey(ARGV[3]), ARGV[2])
    and redis.call('HEXISTS', lease_key, ARGV[2]) == 0
end

-- Nothing to take: the own job directly, or why not.
local function nothing(capped)
  if own_is_direct() then return {'direct'} end
  if #capped > 0 then
    local out = {'none', 'capped'}
    for _, q in ipairs(capped) do table.insert(out, q) end
    return out
  end
  return {'none', 'empty'}
end

if op == 'take' then
  local own = ARGV[2]
  local lease_s, cap, flight_ttl = tonumber(ARGV[5]), tonumber(ARGV[7]), tonumber(ARGV[8])
  local now = nil
  local function clock()  -- Redis's, read once and only when needed
    if now == nil then now = now_s() end
    return now
  end
  local healed = ARGV[6] == '1'
  if healed then heal(clock(), lease_s) end

  -- Start-time fair queueing: a producer's next job starts at the finish of its previous
  -- pick and finishes 1/weight later; the smallest start goes (ties: the smaller name).
  -- No virtual clock moves here: a take given back (put_back, release) returns its
  -- charge and leaves nothing else changed.
  while true do
    local p, tag = fairest(clock, cap, flight_ttl)
    if p == nil then
      -- Nothing to take: expired leases are healed now if they were not already.
      if healed or heal(clock(), lease_s) == 0 then return nothing(tag) end
      healed = true
    else
      local head = redis.call('ZPOPMIN', wkey(p))
      if #head == 0 then
        went_idle(p, tostring(tag))  -- its list emptied at an earlier take
      else
        local job, score = head[1], head[2]
        if job ~= own and own_is_direct() then
          redis.call('ZADD', wkey(p), score, job)  -- not taken after all
          return {'direct'}
        end
        local charge = 1 / (weights_from(9)[p] or 1)
        local flight = 0
        if cap > 0 then flight = redis.call('ZADD', fkey(p), 'NX', clock(), job) end  -- the cap
        local info = table.concat({p, score, tostring(charge), flight, ''}, '\t')
        -- A job listed twice (a re-sent enqueue) and leased already: this copy is dropped.
        if redis.call('HSETNX', lease_key, job, info) == 1 then
          redis.call('ZADD', ready_key, tag + charge, p)
          return {'pick', job, p, tostring(math.floor(tonumber(score) / RANK_SPAN))}
        end
        if flight == 1 then redis.call('ZREM', fkey(p), job) end
      end
    end
  end
end

if op == 'claimed' then
  redis.call('HDEL', lease_key, ARGV[2])
  -- In flight counts only for a cap: without one nothing would ever trim the set.
  if tonumber(ARGV[4] or '0') > 0 then
    redis.call('ZADD', fkey(ARGV[3]), now_s(), ARGV[2])
  end
  return 1
end

if op == 'release' then
  end_lease(ARGV[2], false)
  return 1
end

if op == 'put_back' then
  end_lease(ARGV[2], true)
  return 1
end

if op == 'left' then
  redis.call('ZREM', wkey(ARGV[3]), ARGV[2])
  end_lease(ARGV[2], false)
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
  local counts = {}  -- "<producer>\t<rank>" -> waiting + leased
  local producers = {}
  local function count(producer, score)
    local class = producer .. '\t' .. tostring(math.floor(tonumber(score) / RANK_SPAN))
    counts[class] = (counts[class] or 0) + 1
    producers[producer] = true
  end
  for _, p in ipairs(redis.call('ZRANGE', ready_key, 0, -1)) do
    local listed = redis.call('ZRANGE', wkey(p), 0, -1, 'WITHSCORES')
    for i = 2, #listed, 2 do count(p, listed[i]) end
  end
  for _, info in ipairs(redis.call('HVALS', lease_key)) do
    local producer, score = parse_lease(info)
    count(producer, score)
  end
  local out = {}
  for class, n in pairs(counts) do
    local tab = string.find(class, '\t', 1, true)
    local p = string.sub(class, 1, tab - 1)
    table.insert(out, p)
    table.insert(out, string.sub(class, tab + 1))
    table.insert(out, n)
    table.insert(out, redis.call('ZCARD', fkey(p)))
  end
  return out
end

if op == 'migrate' then
  local classes_key, old_lease_of = base .. 'classes', base .. 'lease_of'
  local moved = 0
  for _, job in ipairs(redis.call('HKEYS', old_lease_of)) do
    local info = redis.call('HGET', old_lease_of, job)  -- "<class>\t<score>\t<charge>"
    local class, score, charge = string.match(info, '^([^\t]*)\t([^\t]*)\t([^\t]*)$')
    redis.call('ZADD', base .. 'w:' .. class, 'NX', score, job)
    redis.call('SADD', classes_key, class)
    local producer = string.match(class, '^(.*)|')
    redis.call('HINCRBYFLOAT', finish_key, producer, -tonumber(charge))
  end
  redis.call('DEL', old_lease_of, base .. 'lease')
  for _, class in ipairs(redis.call('SMEMBERS', classes_key)) do
    local producer, r = string.match(class, '^(.*)|(%d)$')
    local listed = redis.call('ZRANGE', base .. 'w:' .. class, 0, -1, 'WITHSCORES')
    for i = 1, #listed, 2 do
      local score = tonumber(r) * RANK_SPAN + tonumber(listed[i + 1])
      moved = moved + redis.call('ZADD', wkey(producer), 'NX', score, listed[i])
    end
    redis.call('DEL', base .. 'w:' .. class)
    if #listed > 0 and not redis.call('ZSCORE', ready_key, producer) then
      redis.call('ZADD', ready_key, redis.call('HGET', finish_key, producer) or '0', producer)
    end
  end
  redis.call('DEL', classes_key)
  return moved
end

return redis.error_reply('fairshare.lua: unknown op ' .. tostring(op))
