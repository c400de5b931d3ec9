-- update.lua: move one job to a state and/or change its fields, atomically, if allowed.
-- Loaded by workers/jobs/store.py (JobStore.apply, the one write path for an existing
-- record); tested directly in tests/workers/jobs/test_store_scripts.py.
--
-- The state table (TRANSITIONS, workers/jobs/state.py) is compiled into the script when
-- store.py loads it (the `moves` line below): a move outside the table is refused with an
-- error reply even if the caller's allowed states would let it through. No extra ARGV,
-- no extra round trip.
--
-- Every key it touches is in KEYS, and on a sharded store (NBQ_STORE_SHARDS) all of them
-- carry the job's shard hash tag {s<n>}: one slot per call, as Redis Cluster requires.
--
-- KEYS[1]      string  the job's record, a hash: <space>:job:<job_id>
-- KEYS[2]      string  the shard's state counter, a hash: <space>:metrics:c:jobs_state;
--                      field '["<state>"]' counts entries into <state> (nbq_jobs_state_total)
-- KEYS[3..#KEYS-1]
--              string  the per-state indexes the job can be in (every non-terminal state),
--                      sorted sets <space>:state:<state> scored by last update time;
--                      ARGV[5..] names their states, in the same order. A state without an
--                      index key here (stored, failed, cancelled) is never indexed.
-- KEYS[#KEYS]  string  the shard's notify outbox, a sorted set <space>:notify:outbox:
--                      a move into an end state (`ends` below) of a job whose end is told
--                      (it has a notify_url or an on_done task, or its producer is one of
--                      the outbox producers) adds '<job_id>|<now>' scored by now, in this
--                      same call; the process that sent the job's nbq.notify / on_done
--                      removes it, the reconciler re-sends what stays (workers/notify/outbox.py).
--
-- ARGV[1]      string  now: epoch seconds (Python repr of a float). The index score, the
--                      t_<state> time, updated_at, and this call's stamp: a retried call
--                      (its first reply lost in a failover) finds updated_at == now and
--                      reports applied without applying anything twice.
-- ARGV[2]      string  to_state: the target state; '' = keep the current state.
-- ARGV[3]      int     retention: the record's TTL in seconds, counted from the job's end:
--                      set by every write that leaves the job ended (stored, failed,
--                      cancelled); removed (PERSIST) when a person moves an ended job
--                      back to work (nbq retry / adopt); an active job's record has none.
-- ARGV[4]      string  job_id: the member of the index sorted sets.
-- ARGV[5 .. 4 + #KEYS - 3]
--              string  the states of KEYS[3..#KEYS-1], one per index key.
-- then six count-prefixed sections, in this order:
--   n_allowed, n_allowed x state          the job must be in one of these states
--                                         (n_allowed = 0: any state)
--   n_expect,  n_expect x (field, value)  each field must hold exactly value
--                                         ('' = the field must be absent or empty)
--   n_set,     n_set x (field, value)     fields to write (HSET)
--   n_incr,    n_incr x (field, amount)   fields to add amount to (HINCRBYFLOAT's
--                                         arithmetic, done here and written with the
--                                         one HSET: no command per increment)
--   n_unset,   n_unset x field            fields to remove (HDEL, only those present)
--   n_outbox,  n_outbox x producer        producers whose every end goes to the outbox
--                                         (a default notify URL, NBQ_NOTIFY_URLS; ''
--                                         = jobs without a producer)
-- then, optionally, one, two or three more:
--   count                                 '0': do not add the move to KEYS[2] (the
--                                         caller counts it with its held metric events,
--                                         NBQ_METRICS_FLUSH_S); absent or else: add it
--   index                                 '0': a note (the state stays) leaves the job's
--                                         index score as it was (the transition's
--                                         keeps_index_time: the poll's claim); absent or
--                                         else: the score becomes now. A move always
--                                         writes its new state's index.
--   publish                               a channel prefix: a move into an end state
--                                         (`ends`) that applies (or a retried call that
--                                         finds its own such move) publishes the new
--                                         state on '<publish>:jobend:<job_id>' in this
--                                         same call (workers/notify/push.py's channel;
--                                         not a key: one slot still); absent or '': none
--
-- Returns {applied, fields}: applied 1 if the change was made (or was made by this same
-- call's first run), 0 if a check failed; fields is the record after the call (flat
-- field, value list, in no particular order: the one HGETALL before the write with the
-- write applied in Lua), {} if the job does not exist (then applied is 0).
-- Error reply "nbq: illegal move <state> -> <to_state>" (nothing written) if the checks
-- passed but the state table has no such move; "nbq: not a number: <field>" (nothing
-- written) if an increment's field or amount is not a number, or the sum is not finite.
local moves = {--[[TRANSITIONS]]}
local ends = {--[[END_STATES]]}
local key = KEYS[1]
local outbox_key = KEYS[#KEYS]
local counter_key = KEYS[2]
local now = ARGV[1]
local to_state = ARGV[2]
local retention = tonumber(ARGV[3])
local job_id = ARGV[4]
local index_of = {}
for k = 3, #KEYS - 1 do index_of[ARGV[5 + k - 3]] = KEYS[k] end
local i = 5 + #KEYS - 3
local n_allowed = tonumber(ARGV[i]); i = i + 1
local allowed_at = i; i = i + n_allowed
local n_expect = tonumber(ARGV[i]); i = i + 1
local expect_at = i; i = i + 2 * n_expect
-- One read: the whole record (the checks read it, and it is the reply, updated below in
-- Lua: no second HGETALL after the write).
local flat = redis.call('HGETALL', key)
local record = {}
for j = 1, #flat, 2 do record[flat[j]] = flat[j + 1] end
local state = record['state']
if not state then return {0, {}} end
-- The optional publish word (the header): an applied end published in this call.
local function publish_end(publish)
  if publish ~= '' and ends[to_state] then
    redis.call('PUBLISH', publish .. ':jobend:' .. job_id, to_state)
  end
end
-- A retried call (the first run's reply was lost with a failed-over master) finds its
-- own stamp: report it applied, apply nothing twice (an end is published again, as the
-- caller's listeners are called again: its first answer may have been lost).
if record['updated_at'] == now and (to_state == '' or to_state == state) then
  local last = #ARGV
  local n_tail = 5 + #KEYS - 3
  n_tail = n_tail + 1 + tonumber(ARGV[n_tail])
  n_tail = n_tail + 1 + 2 * tonumber(ARGV[n_tail])
  n_tail = n_tail + 1 + 2 * tonumber(ARGV[n_tail])
  n_tail = n_tail + 1 + 2 * tonumber(ARGV[n_tail])
  n_tail = n_tail + 1 + tonumber(ARGV[n_tail])
  n_tail = n_tail + 1 + tonumber(ARGV[n_tail])
  if last >= n_tail + 2 then publish_end(ARGV[n_tail + 2]) end
  return {1, flat}
end
local ok = (n_allowed == 0)
for j = 0, n_allowed - 1 do
  if ARGV[allowed_at + j] == state then ok = true end
end
for j = 0, n_expect - 1 do
  if (record[ARGV[expect_at + 2 * j]] or '') ~= ARGV[expect_at + 2 * j + 1] then
    ok = false
  end
end
if not ok then return {0, flat} end
if to_state ~= '' and not (moves[state] or {})[to_state] then
  return redis.error_reply('nbq: illegal move ' .. state .. ' -> ' .. to_state)
end
-- One write: the fields, the increments, the new state and its time, the stamp.
local n_set = tonumber(ARGV[i]); i = i + 1
local sets = {}
for j = 1, 2 * n_set do sets[j] = ARGV[i + j - 1] end
i = i + 2 * n_set
for j = 1, #sets, 2 do record[sets[j]] = sets[j + 1] end
local n_incr = tonumber(ARGV[i]); i = i + 1
-- An increment is added here and written with the HSET below (no HINCRBYFLOAT each):
-- the script is atomic, so it is the same read-add-write. The sum is written as
-- HINCRBYFLOAT would (an integer without a fraction), else as the shortest of 15..17
-- significant digits that reads back as the same double: the sum Python would compute
-- (HINCRBYFLOAT adds in long double, which can differ in the 17th digit).
for j = 0, n_incr - 1 do
  local field = ARGV[i + 2 * j]
  local current = tonumber(record[field] or '0')
  local amount = tonumber(ARGV[i + 2 * j + 1])
  if not current or not amount then
    return redis.error_reply('nbq: not a number: ' .. field)
  end
  local sum = current + amount
  if sum ~= sum or sum == math.huge or sum == -math.huge then
    return redis.error_reply('nbq: not a number: ' .. field)
  end
  local text
  if sum == math.floor(sum) and math.abs(sum) < 1e15 then
    text = string.format('%d', sum)
  else
    text = string.format('%.15g', sum)
    if tonumber(text) ~= sum then text = string.format('%.16g', sum) end
    if tonumber(text) ~= sum then text = string.format('%.17g', sum) end
  end
  record[field] = text
  sets[#sets + 1] = field; sets[#sets + 1] = text
end
i = i + 2 * n_incr
local n_unset = tonumber(ARGV[i]); i = i + 1
local unset_at = i; i = i + n_unset
local n_outbox = tonumber(ARGV[i]); i = i + 1
local count_here = ARGV[i + n_outbox] ~= '0'
local touch_index = ARGV[i + n_outbox + 1] ~= '0'
local publish = ARGV[i + n_outbox + 2] or ''
local told = (record['notify_url'] or '') ~= '' or (record['on_done_task'] or '') ~= ''
for j = i, i + n_outbox - 1 do
  if ARGV[j] == (record['producer'] or '') then told = true end
end
local new_state = state
if to_state ~= '' then
  new_state = to_state
  if to_state ~= state then
    sets[#sets + 1] = 'state'; sets[#sets + 1] = to_state
    sets[#sets + 1] = 't_' .. to_state; sets[#sets + 1] = now
    record['state'] = to_state; record['t_' .. to_state] = now
    if index_of[state] then redis.call('ZREM', index_of[state], job_id) end
    if count_here then redis.call('HINCRBY', counter_key, '["' .. to_state .. '"]', 1) end
    if ends[to_state] and told then
      redis.call('ZADD', outbox_key, now, job_id .. '|' .. now)
    end
  end
end
sets[#sets + 1] = 'updated_at'; sets[#sets + 1] = now
record['updated_at'] = now
redis.call('HSET', key, unpack(sets))
-- Only the fields that are there: an HDEL of absent fields would be a command for nothing.
local present = {}
for j = unset_at, unset_at + n_unset - 1 do
  if record[ARGV[j]] then
    present[#present + 1] = ARGV[j]
    record[ARGV[j]] = nil
  end
end
if #present > 0 then redis.call('HDEL', key, unpack(present)) end
if to_state ~= state then publish_end(publish) end
if index_of[new_state] then
  if new_state ~= state or touch_index then
    redis.call('ZADD', index_of[new_state], now, job_id)
  end
  -- Back to work from an ended state (nbq retry / adopt): no TTL while active.
  if not index_of[state] then redis.call('PERSIST', key) end
else
  redis.call('EXPIRE', key, retention)
end
local reply = {}
for field, value in pairs(record) do
  reply[#reply + 1] = field; reply[#reply + 1] = value
end
return {1, reply}
