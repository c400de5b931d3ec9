"""Redis job store: atomic, state-checked updates of job records.

Every write goes through one Lua script that checks the current state, applies the
change and maintains a per-state index (a sorted set scored by last update time) that the
reconciler scans for stuck jobs. One winner per transition: a redelivered or duplicated
task finds the job already moved and does nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from workers.jobs.record import JobRecord, encode_field
from workers.jobs.state import JobState, sources_of

_UPDATE_LUA = """
local key = KEYS[1]
local now = ARGV[1]
local to_state = ARGV[2]
local retention = tonumber(ARGV[3])
local index_prefix = ARGV[4]
local job_id = ARGV[5]
local counter_key = ARGV[6]
local i = 7
local state = redis.call('HGET', key, 'state')
if not state then return {0, {}} end
local n_allowed = tonumber(ARGV[i]); i = i + 1
local ok = (n_allowed == 0)
for j = 1, n_allowed do
  if ARGV[i] == state then ok = true end
  i = i + 1
end
local n_expect = tonumber(ARGV[i]); i = i + 1
for j = 1, n_expect do
  local current = redis.call('HGET', key, ARGV[i]) or ''
  if current ~= ARGV[i + 1] then ok = false end
  i = i + 2
end
if not ok then return {0, redis.call('HGETALL', key)} end
local n_set = tonumber(ARGV[i]); i = i + 1
for j = 1, n_set do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1]); i = i + 2
end
local n_incr = tonumber(ARGV[i]); i = i + 1
for j = 1, n_incr do
  redis.call('HINCRBYFLOAT', key, ARGV[i], ARGV[i + 1]); i = i + 2
end
local n_unset = tonumber(ARGV[i]); i = i + 1
for j = 1, n_unset do
  redis.call('HDEL', key, ARGV[i]); i = i + 1
end
local terminal = {stored = true, failed = true, cancelled = true}
local new_state = state
if to_state ~= '' then
  new_state = to_state
  if to_state ~= state then
    redis.call('HSET', key, 'state', to_state, 't_' .. to_state, now)
    redis.call('ZREM', index_prefix .. state, job_id)
    redis.call('HINCRBY', counter_key, '["' .. to_state .. '"]', 1)
  end
end
redis.call('HSET', key, 'updated_at', now)
if not terminal[new_state] then
  redis.call('ZADD', index_prefix .. new_state, now, job_id)
end
redis.call('EXPIRE', key, retention)
return {1, redis.call('HGETALL', key)}
"""

_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('HGETALL', KEYS[1])} end
redis.call('HSET', KEYS[1], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
if ARGV[2] ~= '' then redis.call('ZADD', ARGV[2], ARGV[3], ARGV[4]) end
redis.call('HINCRBY', ARGV[5], '["' .. ARGV[6] .. '"]', 1)
return {1}
"""


class JobNotFoundError(KeyError):
    """No record for this job id (never created, or past retention)."""


def _pairs_to_dict(flat: list[Any]) -> dict[str, str]:
    items = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
    return dict(zip(items[::2], items[1::2], strict=True))


class JobStore:
    """Job records under ``<prefix>:job:<id>``; indexes under ``<prefix>:state:<state>``."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "nbq",
        retention_s: int = 604800,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 100,
    ):
        self.redis = client
        self.prefix = prefix
        self.retention_s = retention_s
        #: NBQ_STORE_WAIT_REPLICAS / _TIMEOUT_MS: see ``wait_for_replicas``.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._update = client.register_script(_UPDATE_LUA)
        self._create = client.register_script(_CREATE_LUA)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "nbq", retention_s: int = 604800) -> JobStore:
        return cls(redis.Redis.from_url(url), prefix=prefix, retention_s=retention_s)

    @property
    def state_counter_key(self) -> str:
        """``nbq_jobs_state_total``'s Redis hash: entries into each state, counted by the
        same script that moves the job, so the metric is exact and costs no round trip."""
        return f"{self.prefix}:metrics:c:jobs_state"

    @property
    def epoch_key(self) -> str:
        """The store's epoch marker (no TTL): its disappearance means the data was lost."""
        return f"{self.prefix}:store:epoch"

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def index_key(self, state: JobState) -> str:
        return f"{self.prefix}:state:{state.value}"

    # -- reads ------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        raw = self.redis.hgetall(self.key(job_id))
        if not raw:
            return None
        return JobRecord.from_hash(_pairs_to_dict([x for kv in raw.items() for x in kv]))

    def require(self, job_id: str) -> JobRecord:
        record = self.get(job_id)
        if record is None:
            raise JobNotFoundError(job_id)
        return record

    def ids_in_state(
        self, state: JobState, *, updated_before: float | None = None, limit: int = 1000
    ) -> list[str]:
        """Job ids in ``state``, oldest update first; optionally only those idle since."""
        upper: float | str = "+inf" if updated_before is None else updated_before
        ids = self.redis.zrangebyscore(self.index_key(state), "-inf", upper, start=0, num=limit)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    def count_in_state(self, state: JobState) -> int:
        return int(self.redis.zcard(self.index_key(state)))

    # -- writes -----------------------------------------------------------------------
    def create(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a new record; if the id exists, return the existing one and ``False``."""
        stamped, args = self.create_command(record)
        reply = self._create(keys=[self.key(stamped.job_id)], args=args)
        if reply[0]:
            self.wait_for_replicas()
            # Stored exactly as built: no read-back (one reply and one parse less per enqueue).
            return stamped, True
        return JobRecord.from_hash(_pairs_to_dict(reply[1])), False

    def wait_for_replicas(self) -> int | None:
        """``WAIT`` for ``wait_replicas`` replicas after a write that matters (a job's
        creation, a create's task id); no round trip when it is 0 (the default).

        Returns how many replicas acknowledged (``None`` when not configured). Too few is
        logged, not raised: the write is on the primary, and refusing the job would not
        make it safer. Shared with the Sentinel setup (same setting, same call).
        """
        if self.wait_replicas <= 0:
            return None
        acked = int(self.redis.wait(self.wait_replicas, self.wait_timeout_ms))
        if acked < self.wait_replicas:
            from workers.logs import get_logger

            get_logger("nbq.store").warning(
                "store_wait_short",
                replicas_acked=acked,
                wanted=self.wait_replicas,
                timeout_ms=self.wait_timeout_ms,
            )
        return acked

    def create_command(self, record: JobRecord) -> tuple[JobRecord, list[Any]]:
        """The stamped record and the create script's ARGV (its one key is ``key(job_id)``).

        Lets a caller run the same create inside its own pipeline (``create_eval_args``).
        """
        now = time.time()
        record = record.model_copy(
            update={
                "created_at": record.created_at or now,
                "updated_at": now,
                "state_times": {record.state.value: now},
            }
        )
        index = "" if record.state.is_terminal else self.index_key(record.state)
        args: list[Any] = [
            self.retention_s,
            index,
            now,
            record.job_id,
            self.state_counter_key,
            record.state.value,
        ]
        for name, value in record.to_hash().items():
            args += [name, value]
        return record, args

    def create_eval_args(self, record: JobRecord) -> tuple[JobRecord, list[Any]]:
        """``EVAL`` arguments that create ``record`` (for a pipeline another library owns).

        EVAL, not EVALSHA: a pipeline we do not execute ourselves cannot recover from
        NOSCRIPT (Redis restarted), and Redis caches the compiled script either way.
        """
        stamped, args = self.create_command(record)
        return stamped, ["EVAL", _CREATE_LUA, 1, self.key(stamped.job_id), *args]

    def transition(
        self,
        job_id: str,
        to: JobState | None = None,
        *,
        allowed_from: Iterable[JobState] | None = None,
        set_fields: Mapping[str, Any] | None = None,
        incr: Mapping[str, float] | None = None,
        unset: Iterable[str] = (),
        expect: Mapping[str, str | None] | None = None,
    ) -> tuple[JobRecord | None, bool]:
        """Atomically move ``job_id`` to ``to`` if its state is allowed, and apply fields.

        ``allowed_from`` defaults to every state that may legally reach ``to`` (and, with
        ``to=None``, to any state). ``expect`` maps fields to the exact string they must
        hold (``None`` = absent), e.g. a poll token, so duplicates lose. Returns
        ``(record, applied)``; the record is the current one either way, ``None`` if the
        job does not exist.
        """
        if allowed_from is None:
            allowed = sorted(sources_of(to)) if to is not None else []
        else:
            allowed = sorted(allowed_from)
        args: list[Any] = [
            repr(time.time()),
            to.value if to is not None else "",
            self.retention_s,
            f"{self.prefix}:state:",
            job_id,
            self.state_counter_key,
            len(allowed),
            *[s.value for s in allowed],
        ]
        expect_items = list((expect or {}).items())
        args.append(len(expect_items))
        for name, expected in expect_items:
            args += [name, "" if expected is None else expected]
        pairs = [(k, encode_field(k, _jsonable(v))) for k, v in (set_fields or {}).items()]
        args.append(len(pairs))
        for name, value in pairs:
            args += [name, value]
        incr_items = list((incr or {}).items())
        args.append(len(incr_items))
        for name, amount in incr_items:
            args += [name, amount]
        unset_list = list(unset)
        args.append(len(unset_list))
        args += unset_list
        applied, flat = self._update(keys=[self.key(job_id)], args=args)
        data = _pairs_to_dict(flat)
        if not data:
            return None, False
        data.setdefault("job_id", job_id)
        return JobRecord.from_hash(data), bool(applied)

    def update(
        self,
        job_id: str,
        *,
        in_states: Iterable[JobState] | None = None,
        set_fields: Mapping[str, Any] | None = None,
        incr: Mapping[str, float] | None = None,
        unset: Iterable[str] = (),
        expect: Mapping[str, str | None] | None = None,
    ) -> tuple[JobRecord | None, bool]:
        """Change fields without changing state (only while in ``in_states``, if given)."""
        return self.transition(
            job_id,
            None,
            allowed_from=in_states,
            set_fields=set_fields,
            incr=incr,
            unset=unset,
            expect=expect,
        )


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, JobState):
        return value.value
    return value
