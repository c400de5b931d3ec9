-- create.lua: store a new job record once; an existing id is left as it is.
-- Loaded by workers/jobs/store.py (JobStore.create, and JobStore.create_eval_args for the
-- one-round-trip enqueue in producers/publish.py); tested directly in
-- tests/workers/jobs/test_store_scripts.py.
--
-- Every key it touches is in KEYS, and on a sharded store (NBQ_STORE_SHARDS) all of them
-- carry the job's shard hash tag {s<n>}: one slot per call, as Redis Cluster requires.
--
-- KEYS[1]    string  the job's record, a hash: <space>:job:<job_id>
-- KEYS[2]    string  the shard's state counter, a hash: <space>:metrics:c:jobs_state;
--                    field '["<state>"]' counts entries into <state> (nbq_jobs_state_total)
-- KEYS[3]    string  optional: the index of the initial state, a sorted set
--                    <space>:state:<state> scored by last update time; absent when the
--                    initial state is never indexed (stored, failed, cancelled)
--
-- ARGV[1]    int     retention: the record's TTL in seconds, set only on a record created
--                    in an ended state (no KEYS[3]); an active job's record has no TTL
-- ARGV[2]    string  now: epoch seconds; the index score and this call's stamp (the
--                    record's updated_at, which ARGV[5..] also carries): a retried create
--                    (its first reply lost in a failover) finds its own stamp and reports
--                    created, once
-- ARGV[3]    string  job_id: the member of the index sorted set
-- ARGV[4]    string  the initial state (counted in KEYS[2])
-- ARGV[5..]  string  the record's fields as field, value pairs (HSET)
--
-- Returns {1} if this call created the record (or this same call's first run did);
-- {0, fields} if the id already existed: fields is the existing record's HGETALL (flat
-- field, value list), which is not changed.
-- Error reply "nbq: no birth in <state>" (nothing written) if the initial state is not
-- one a record is born in: the birth states (BIRTHS, workers/jobs/lifecycle.py) are
-- compiled into the script when store.py loads it (the `births` line below).
local births = {--[[BIRTHS]]}
if not births[ARGV[4]] then
  return redis.error_reply('nbq: no birth in ' .. tostring(ARGV[4]))
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  -- A retried create (reply lost in a failover) finds its own stamp: created, once.
  if redis.call('HGET', KEYS[1], 'updated_at') == ARGV[2] then return {1} end
  return {0, redis.call('HGETALL', KEYS[1])}
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
-- An active job never expires (its retention counts from its end: update.lua).
if KEYS[3] then
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
else
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
end
redis.call('HINCRBY', KEYS[2], '["' .. ARGV[4] .. '"]', 1)
return {1}
