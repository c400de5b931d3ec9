-- credits.lua: one UTC day's credit book — holds (reservations) and charges, atomically.
-- Loaded by workers/resilience/credits.py (CreditLedger); tested directly in
-- tests/workers/resilience/test_credit_budget.py.
--
-- Amounts are integers of micro-credits (1e-6 credit): sums are exact, to the cent and
-- beyond (HINCRBY, no float drift). Every key is the day's: on a Redis Cluster all carry
-- the day's hash tag {<YYYY-MM-DD>}, one slot per call.
--
-- KEYS[1]  hash    the day's book <prefix>:credit-book:<day>; fields (micro-credits):
--                  paid, reserved, paid|<producer>, reserved|<producer>
-- KEYS[2]  hash    the day's holds <prefix>:credit-holds:<day>:
--                  job_id -> "<micro>|<producer>|<epoch s held>"
-- KEYS[3]  string  the day's spend as workers before the book wrote it (float credits,
--                  INCRBYFLOAT) <prefix>:credits:<day>: counted as paid, read only
-- KEYS[4]  string  the same per producer <prefix>:credits:<day>:<producer> (KEYS[3] again
--                  when there is no producer)
-- KEYS[5]  hash    the day's ended jobs <prefix>:credit-ended:<day>: job_id -> the micro-
--                  credits of its credits_paid already counted in the book's failed /
--                  cancelled today (so a job that ends twice is not counted twice)
--
-- ARGV[1]  op      hold | settle | release | ended
-- ARGV[2]  string  job_id
-- ARGV[3]  string  producer ('' = none)
-- ARGV[4]  int     hold: the job's price; settle: the create's charge; ended: the job's
--                  credits_paid; release: unused
-- ARGV[5]  int     the daily limit (0 = none)
-- ARGV[6]  int     the producer's daily limit (0 = none, or no producer)
-- ARGV[7]  int     TTL of the day's keys in seconds
-- ARGV[8]  string  ended: the state the job ended in (failed | cancelled); settle:
--                  'unheld' when the caller knows the job holds nothing (no budget, and
--                  its record names no day it held on): the holds are not looked up;
--                  else ''
-- ARGV[9]  string  hold: now, epoch seconds (stamped on a new hold; the reconciler frees
--                  an old hold whose job was never recorded or has ended)
--
-- hold:    the job holds its price today unless that would take paid + reserved past a
--          limit. A job that already holds today is checked again (paid + reserved, its
--          own hold included, within the limits: a lowered limit). Returns
--          {1, held} or {0, 'total'|'producer', paid, reserved}; a refused job's hold
--          (if it had one) is released. The day keys' TTL is set by the hold that finds
--          no other (the keys may be new then), not by every hold.
-- settle:  a create answered with a charge: its hold (if any, today) is released and the
--          charge added to paid. Returns {1, released}. The book's TTL is set only when
--          this write created its paid field (the key may be new): any other writer that
--          creates a day key sets its TTL in that same write, so a key that exists has one.
-- release: the job no longer needs its hold (e.g. a 402 hand-back): released if any.
--          Returns {1, released}.
-- ended:   the job ended failed or cancelled: its hold (if any) is released, and the part
--          of its credits_paid not yet counted today is added to the book's <state>.
--          Returns {1, released, counted}.
local op, job, producer = ARGV[1], ARGV[2], ARGV[3]
local amount = tonumber(ARGV[4])
local ttl = tonumber(ARGV[7])

local function legacy(key)
  local value = tonumber(redis.call('GET', key) or '0') or 0
  return math.floor(value * 1000000 + 0.5)
end

local function field(name, who)
  return tonumber(redis.call('HGET', KEYS[1], name .. who) or '0')
end

local function release()
  local held = redis.call('HGET', KEYS[2], job)
  if not held then return 0 end
  local micro = tonumber(string.match(held, '^(%-?%d+)'))
  local owner = string.match(held, '^%-?%d+|([^|]*)') or ''
  redis.call('HDEL', KEYS[2], job)
  redis.call('HINCRBY', KEYS[1], 'reserved', -micro)
  if owner ~= '' then redis.call('HINCRBY', KEYS[1], 'reserved|' .. owner, -micro) end
  return micro
end

local function touch()
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
end

if op == 'release' then
  return {1, release()}
end

if op == 'ended' then
  local released = release()
  local counted = tonumber(redis.call('HGET', KEYS[5], job) or '0')
  local delta = amount - counted
  if delta > 0 then
    redis.call('HINCRBY', KEYS[1], ARGV[8], delta)
    redis.call('HSET', KEYS[5], job, amount)
    redis.call('EXPIRE', KEYS[5], ttl)
    touch()
  else
    delta = 0
  end
  return {1, released, delta}
end

if op == 'settle' then
  local released = 0
  if ARGV[8] ~= 'unheld' then released = release() end
  local paid = redis.call('HINCRBY', KEYS[1], 'paid', amount)
  if producer ~= '' then redis.call('HINCRBY', KEYS[1], 'paid|' .. producer, amount) end
  -- A release only removes from the holds (their key keeps its TTL); the book is new
  -- only if its paid field was (the sum is this very amount).
  if paid == amount then redis.call('EXPIRE', KEYS[1], ttl) end
  return {1, released}
end

if op ~= 'hold' then return redis.error_reply('credits.lua: unknown op ' .. op) end

local held = redis.call('HGET', KEYS[2], job)
local extra = held and 0 or amount
local checks = {{'total', '', tonumber(ARGV[5]), KEYS[3]}}
if producer ~= '' then
  checks[2] = {'producer', '|' .. producer, tonumber(ARGV[6]), KEYS[4]}
end
for _, check in ipairs(checks) do
  local limit = check[3]
  if limit > 0 then
    local paid = field('paid', check[2]) + legacy(check[4])
    local reserved = field('reserved', check[2])
    if paid + reserved + extra > limit then
      release()
      return {0, check[1], paid, reserved}
    end
  end
end
if held then return {1, tonumber(string.match(held, '^(%-?%d+)'))} end
redis.call('HSET', KEYS[2], job, amount .. '|' .. producer .. '|' .. ARGV[9])
local reserved = redis.call('HINCRBY', KEYS[1], 'reserved', amount)
if producer ~= '' then redis.call('HINCRBY', KEYS[1], 'reserved|' .. producer, amount) end
-- reserved is the sum of the holds: only when it is this hold alone can the holds (or the
-- book) be new keys; a key that exists got its TTL from the write that created it.
if reserved == amount then touch() end
return {1, amount}
