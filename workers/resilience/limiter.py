"""A rate limiter shared by all workers and processes (atomic Lua token bucket in Redis).

Celery's ``rate_limit`` is per worker; the API's limits are per account. Each call kind
(``create``, ``query``) has a bucket refilled at the configured rate. A 429 halves the
effective rate for a while (honouring Retry-After) and blocks the kind until Retry-After
has passed; then it recovers by itself when the penalty key expires. A caller that gets
no token is told how long to wait and re-schedules its task — it never spins.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from nanobanana_queue.workers import metrics
from nanobanana_queue.workers.redis_client import tagged

#: ``acquire``'s "read the block here" (a caller may pass what it read: None = absent).
_UNREAD = object()

_BUCKET_LUA = """
local key = KEYS[1]
local penalty_key = KEYS[2]
local block_key = KEYS[3]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
-- One read each for the block and penalty keys and for the bucket (5 commands a token).
local marks = redis.call('MGET', block_key, penalty_key)
local blocked_until = tonumber(marks[1] or '0')
if now < blocked_until then return tostring(blocked_until - now) end
if rate <= 0 then return '0' end
if marks[2] then rate = rate / 2 end
local bucket = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(bucket[1] or tostring(burst))
local ts = tonumber(bucket[2] or tostring(now))
-- Callers' clocks race (several processes, several hosts): a token asked with a time
-- behind the bucket's refills nothing and never moves the bucket's time back (which
-- would take tokens away now and hand them out twice later).
if now < ts then now = ts end
tokens = math.min(burst, tokens + (now - ts) * rate)
if tokens >= 1 then
  redis.call('HSET', key, 'tokens', tostring(tokens - 1), 'ts', tostring(now))
  redis.call('EXPIRE', key, 3600)
  return '0'
end
redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', key, 3600)
return tostring((1 - tokens) / rate)
"""


_GIVE_BACK_LUA = """
-- A granted token that bought nothing (no create was sent): back in the bucket, never
-- past the burst. A bucket gone (expired) is full already.
local tokens = redis.call('HGET', KEYS[1], 'tokens')
if not tokens then return 0 end
redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(tonumber(ARGV[1]), tonumber(tokens) + 1)))
return 1
"""


class SharedRateLimiter:
    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "nbq",
        rates_per_s: dict[str, float] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.redis = client
        self.prefix = prefix
        self.rates_per_s = rates_per_s or {}
        #: Wall-clock seconds (the buckets' times are shared by every host); tests step it.
        self.clock = clock
        self._bucket = client.register_script(_BUCKET_LUA)
        self._give_back = client.register_script(_GIVE_BACK_LUA)

    def _keys(self, kind: str) -> list[str]:
        # One hash tag per kind on a cluster: the bucket script and the penalty pipeline
        # touch all three keys.
        base = f"{self.prefix}:limit:{tagged(kind, self.redis)}"
        return [base, f"{base}:penalty", f"{base}:blocked_until"]

    def gate_read(self, kind: str) -> tuple[str, str] | None:
        """The one read ``acquire(kind, blocked=...)`` needs, for a caller's pipeline: an
        unlimited kind's 429 block (``GET``). None for a kind with a rate (its bucket
        script takes a token: it runs in ``acquire``)."""
        if self.rates_per_s.get(kind, 0.0) > 0:
            return None
        return ("GET", self._keys(kind)[2])

    def acquire(self, kind: str, *, blocked: object = _UNREAD) -> float:
        """Take a token: 0.0 when granted, else the seconds to wait before trying again.

        ``blocked``: the reply of ``gate_read(kind)`` the caller just sent (an unlimited
        kind only); else it is read here."""
        rate = self.rates_per_s.get(kind, 0.0)
        if rate <= 0:
            wait_s = self._blocked_for_s(kind, blocked)
        else:
            burst = max(1.0, rate)
            keys = self._keys(kind)
            wait_s = float(self._bucket(keys=keys, args=[rate, burst, repr(self.clock())]))
        if wait_s > 0:
            metrics.limiter_wait(kind)
        return wait_s

    def give_back(self, kind: str) -> None:
        """A token ``acquire`` granted was not used (the call it was for was not made): it
        goes back to the bucket. Nothing to do for an unlimited kind."""
        rate = self.rates_per_s.get(kind, 0.0)
        if rate > 0:
            self._give_back(keys=self._keys(kind)[:1], args=[max(1.0, rate)])

    def _blocked_for_s(self, kind: str, raw: object = _UNREAD) -> float:
        """An unlimited kind (the default) has no bucket, only a 429's block: one ``GET``
        (the bucket script would be ``EVALSHA`` + ``MGET`` for the same answer)."""
        now = self.clock()
        if raw is _UNREAD:
            raw = self.redis.get(self._keys(kind)[2])
        blocked_until = float(raw) if isinstance(raw, bytes | str) and raw else 0.0
        return blocked_until - now if now < blocked_until else 0.0

    def penalise(self, kind: str, retry_after_s: float | None, *, default_s: float = 30.0) -> None:
        """A 429: block ``kind`` for Retry-After, and halve its rate for a while after."""
        wait_s = retry_after_s if retry_after_s and retry_after_s > 0 else default_s
        _, penalty_key, block_key = self._keys(kind)
        pipe = self.redis.pipeline()
        pipe.set(block_key, repr(self.clock() + wait_s), px=max(int(wait_s * 1000), 1))
        pipe.set(penalty_key, "1", px=max(int(wait_s * 4000), 1000))
        pipe.execute()
