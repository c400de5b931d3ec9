"""Redis job store: atomic, state-checked updates of job records.

Every write to an existing record is a named transition of the table in
``workers/jobs/lifecycle.py`` (which declares every field it writes), run by
``JobStore.apply`` through one Lua script (``update.lua``; a new record, only in one of
the table's birth states: ``create.lua``, both next to this module with their KEYS and
ARGV documented) that checks
the current state (and the state table itself), applies the change and maintains a
per-state index (a sorted set scored by last update time, except for a note declared
``keeps_index_time``) that the reconciler scans for stuck jobs. One winner per transition: a
redelivered or duplicated task finds the job already moved and does nothing. Every key a
script touches is passed in KEYS, all in one slot (Redis Cluster, NBQ_STORE_SHARDS).
"""

from __future__ import annotations

import heapq
import itertools
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from importlib.resources import files
from typing import Any

import redis

from nanobanana_queue.workers.errors import JobNotFoundError as JobNotFoundError  # re-exported
from nanobanana_queue.workers.jobs.lifecycle import (
    BIRTHS,
    IllegalTransitionError,
    Transition,
    birth_of,
    declared,
)
from nanobanana_queue.workers.jobs.record import JobRecord, encode_field
from nanobanana_queue.workers.jobs.state import ACTIVE_STATES, TRANSITIONS, JobState
from nanobanana_queue.workers.redis_client import is_cluster

#: What a store that is briefly away raises (restart, Sentinel or Cluster failover).
STORE_AWAY: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
)

#: What sends a cluster's durable write back through the cluster client (which follows
#: it): the slot moved or is moving (resharding), its master is away or was demoted.
CLUSTER_REROUTE: tuple[type[Exception], ...] = (
    *STORE_AWAY,
    redis.exceptions.AskError,  # MovedError too (a subclass)
    redis.exceptions.RedisClusterException,  # the slot map is missing the slot
)


def _script(name: str) -> str:
    """A Lua script shipped next to this module (its header documents KEYS and ARGV)."""
    return files("nanobanana_queue.workers.jobs").joinpath(name).read_text(encoding="utf-8")


def _moves_lua() -> str:
    """``TRANSITIONS`` as a Lua table literal, for ``update.lua``'s ``moves``."""
    rows = []
    for source, targets in TRANSITIONS.items():
        inner = ", ".join(f'["{t.value}"] = true' for t in sorted(targets))
        rows.append(f'["{source.value}"] = {{{inner}}}')
    return "{" + ", ".join(rows) + "}"


#: The states a job's end is told from (webhooks, pushed waits): the end listeners' cue.
END_STATES: frozenset[JobState] = frozenset(
    {JobState.STORED, JobState.FAILED, JobState.CANCELLED, JobState.OUTCOME_UNKNOWN}
)
#: Moves a job and/or changes its fields (``apply``), the state table and the end states
#: (the notify outbox's cue) compiled in.
UPDATE_LUA = (
    _script("update.lua")
    .replace("{--[[TRANSITIONS]]}", _moves_lua(), 1)
    .replace(
        "{--[[END_STATES]]}",
        "{" + ", ".join(f'["{s.value}"] = true' for s in sorted(END_STATES)) + "}",
        1,
    )
)
#: Stores a new record once (``create``, ``create_eval_args``), only in a birth state
#: (``lifecycle.BIRTHS``, compiled in).
CREATE_LUA = _script("create.lua").replace(
    "{--[[BIRTHS]]}", "{" + ", ".join(f'["{b.state.value}"] = true' for b in BIRTHS) + "}", 1
)
#: States with a per-state index (the active ones): the scripts' index KEYS, in this order.
INDEXED_STATES: tuple[JobState, ...] = ACTIVE_STATES


#: One create in this many (by job id) trims its producer's index (``GET /v1/jobs``) of
#: entries past the retention: a command per job less, and the index still holds at most
#: a few creates' worth of expired entries (the reader skips them anyway).
PRODUCER_INDEX_TRIM_EVERY = 16


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
        shards: int = 0,
    ):
        self.redis = client
        #: 0: one Redis, the classic layout. N: a Redis Cluster layout: every job belongs
        #: to one of N shards, each a hash tag ``{s<n>}`` holding its jobs' records, its
        #: per-state indexes and its state counter, so each script touches one slot and
        #: no index is a single hot key; listings fan out over the shards.
        self.shards = shards
        self.prefix = prefix
        self.retention_s = retention_s
        #: Replicas that must acknowledge a job's creation and its create's task id
        #: before the call returns (``WAIT``; NBQ_STORE_WAIT_REPLICAS); 0 = do not wait.
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._on_cluster = is_cluster(client)
        self._update = client.register_script(UPDATE_LUA)
        self._create = client.register_script(CREATE_LUA)
        #: Called with the new record after a write that moved a job into an END_STATES
        #: state (once: only the winning write). A listener sends, never blocks; its
        #: errors are logged, never the caller's (workers/notify/hook.py, push.py).
        self.end_listeners: list[Callable[[JobRecord], None]] = []
        #: End listeners whose sends the notify outbox backs (``nbq.notify``, ``on_done``):
        #: the end write also adds the job to its shard's outbox (``outbox_key``) when the
        #: job's end is told (``is_told``); once every one of these returned, the entry is
        #: removed; one that raised (or a process killed first) leaves it for the
        #: reconciler (workers/notify/outbox.py), which calls them again.
        self.outbox_listeners: list[Callable[[JobRecord], None]] = []
        #: Called by the poll stage after the write that changed a job's progress
        #: (``job.progress`` webhooks): best effort, never in the outbox.
        self.progress_listeners: list[Callable[[JobRecord], None]] = []
        #: Producers whose every end is told (a default notify URL, NBQ_NOTIFY_URLS; ""
        #: = jobs without a producer), besides jobs with their own notify_url / on_done.
        self.outbox_producers: frozenset[str] = frozenset()
        #: Set in a worker that holds its metric events (NBQ_METRICS_FLUSH_S > 0,
        #: workers/runtime.py): a move's entry into its state (``nbq_jobs_state_total``) is
        #: handed to it (``metrics.job_state``, merged with the process's other events)
        #: instead of being counted by the script. ``None``: the script counts it, exact
        #: even if the process dies right after.
        self.state_counts: Callable[[str], None] | None = None
        #: Set in a worker (workers/runtime.py): the write that ends a job publishes its
        #: end on ``<prefix>:jobend:<job id>`` (workers/notify/push.py) inside
        #: ``update.lua``, only when that write applied: no round trip of its own, and no
        #: end written without its publish. ``None``: nothing published by the store.
        self.end_channel_prefix: str | None = None

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "nbq", retention_s: int = 604800) -> JobStore:
        return cls(redis.Redis.from_url(url), prefix=prefix, retention_s=retention_s)

    @property
    def state_counter_key(self) -> str:
        """``nbq_jobs_state_total``'s Redis hash: entries into each state, counted by the
        same script that moves the job, so the metric is exact and costs no round trip.
        (Sharded: one per shard, ``state_counter_keys``.)"""
        return f"{self.prefix}:metrics:c:jobs_state"

    def shard_of(self, job_id: str) -> int:
        return zlib.crc32(job_id.encode()) % self.shards if self.shards else 0

    @property
    def epoch_key(self) -> str:
        """The store's epoch marker (no TTL): its disappearance means the data was lost."""
        return f"{self.prefix}:store:epoch"

    def _space(self, job_id: str) -> str:
        """Key prefix of ``job_id``'s shard: ``nbq`` (one Redis) or ``nbq:{s7}``."""
        if not self.shards:
            return self.prefix
        return f"{self.prefix}:{{s{self.shard_of(job_id)}}}"

    def _spaces(self) -> list[str]:
        if not self.shards:
            return [self.prefix]
        return [f"{self.prefix}:{{s{n}}}" for n in range(self.shards)]

    def counter_key(self, job_id: str) -> str:
        """The state counter the scripts moving ``job_id`` increment (its shard's)."""
        return f"{self._space(job_id)}:metrics:c:jobs_state"

    def state_counter_keys(self) -> list[str]:
        return [f"{space}:metrics:c:jobs_state" for space in self._spaces()]

    def key(self, job_id: str) -> str:
        return f"{self._space(job_id)}:job:{job_id}"

    def outbox_key(self, job_id: str) -> str:
        """The notify outbox of ``job_id``'s shard (its slot): ends not yet told."""
        return f"{self._space(job_id)}:notify:outbox"

    def outbox_keys(self) -> list[str]:
        return [f"{space}:notify:outbox" for space in self._spaces()]

    def is_told(self, record: JobRecord) -> bool:
        """Whether ``record``'s end goes to the outbox (``update.lua``'s same test)."""
        return bool(
            record.notify_url
            or record.on_done_task
            or (record.producer or "") in self.outbox_producers
        )

    def index_key(self, state: JobState, job_id: str | None = None) -> str:
        """The index of ``state`` holding ``job_id`` (sharded: ``job_id`` is required)."""
        if self.shards and job_id is None:
            raise ValueError("a sharded store has one index per shard: pass the job id")
        space = self._space(job_id) if job_id is not None else self.prefix
        return f"{space}:state:{state.value}"

    def index_keys(self, state: JobState) -> list[str]:
        """Every shard's index of ``state`` (one key on a single Redis)."""
        return [f"{space}:state:{state.value}" for space in self._spaces()]

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
        if not self.shards:
            ids = self.redis.zrangebyscore(self.index_key(state), "-inf", upper, start=0, num=limit)
            return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        pipe = self.redis.pipeline(transaction=False)  # one round trip per cluster node
        for key in self.index_keys(state):
            pipe.zrangebyscore(key, "-inf", upper, start=0, num=limit, withscores=True)
        merged = heapq.merge(*pipe.execute(), key=lambda pair: pair[1])
        return [
            i.decode() if isinstance(i, bytes) else str(i)
            for i, _ in itertools.islice(merged, limit)
        ]

    def count_in_state(self, state: JobState) -> int:
        if not self.shards:
            return int(self.redis.zcard(self.index_key(state)))
        pipe = self.redis.pipeline(transaction=False)
        for key in self.index_keys(state):
            pipe.zcard(key)
        return sum(int(n) for n in pipe.execute())

    # -- writes -----------------------------------------------------------------------
    def create(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a new record; if the id exists, return the existing one and ``False``."""
        stamped, args = self.create_command(record)
        keys = self.create_keys(stamped)
        if self.wait_replicas:
            reply = self._durably(["EVAL", CREATE_LUA, len(keys), *keys, *args], stamped.job_id)
        else:
            reply = self._create(keys=keys, args=args)
        if reply[0]:
            if stamped.producer:
                pipe = self.redis.pipeline(transaction=False)
                for command in self.producer_index_commands(stamped):
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                pipe.execute()
            # Stored exactly as built: no read-back (one reply and one parse less per enqueue).
            return stamped, True
        return JobRecord.from_hash(_pairs_to_dict(reply[1])), False

    def wait_for_replicas(self) -> int | None:
        """A separate ``WAIT`` for ``wait_replicas`` replicas; no round trip when it is 0.

        The store's own durable writes (``create``, ``apply(durable=True)``) send their
        ``WAIT`` in the same round trip (``_durably``); this is for callers that wrote
        through another path.

        Returns how many replicas acknowledged (``None`` when not configured). Too few is
        logged, not raised: the write is on the primary, and refusing the job would not
        make it safer. Shared with the Sentinel setup (same setting, same call). Not for a
        cluster store: its client sends ``WAIT`` to every primary, none the writing
        connection (its durable writes wait on their own master, ``_durably_on_cluster``).
        """
        if self.wait_replicas <= 0:
            return None
        acked = int(self.redis.wait(self.wait_replicas, self.wait_timeout_ms))
        if acked < self.wait_replicas:
            from nanobanana_queue.workers.logs import get_logger

            get_logger("nbq.store").warning(
                "store_write_not_replicated",
                replicas_acked=acked,
                wanted=self.wait_replicas,
                timeout_ms=self.wait_timeout_ms,
            )
        return acked

    def create_command(self, record: JobRecord) -> tuple[JobRecord, list[Any]]:
        """The stamped record and ``create.lua``'s ARGV (its KEYS: ``create_keys``).

        Raises ``IllegalTransitionError`` for a record no birth of the table makes
        (``lifecycle.birth_of``). Lets a caller run the same create inside its own
        pipeline (``create_eval_args``).
        """
        birth_of(record)  # born only as the table says (create.lua refuses other states)
        now = time.time()
        record = record.model_copy(
            update={
                "created_at": record.created_at or now,
                "updated_at": now,
                "state_times": {record.state.value: now},
            }
        )
        args: list[Any] = [self.retention_s, now, record.job_id, record.state.value]
        for name, value in record.to_hash().items():
            args += [name, value]
        return record, args

    def producer_index_key(self, producer: str) -> str:
        """A producer's jobs by creation time (``GET /v1/jobs``), newest last: its own
        key (and slot), written right after the create, trimmed to the retention."""
        return f"{self.prefix}:producer:{producer}:jobs"

    def producer_index_commands(self, record: JobRecord) -> list[list[Any]]:
        """Add a new job to its producer's index and drop entries past the retention (a
        record that expired earlier is skipped by the reader). Nothing without a producer."""
        if not record.producer:
            return []
        key = self.producer_index_key(record.producer)
        add: list[list[Any]] = [["ZADD", key, repr(record.created_at), record.job_id]]
        if zlib.crc32(record.job_id.encode()) % PRODUCER_INDEX_TRIM_EVERY:
            return add
        oldest = record.created_at - self.retention_s
        return [*add, ["ZREMRANGEBYSCORE", key, "-inf", f"({oldest!r}"]]

    def create_keys(self, record: JobRecord) -> list[str]:
        """``create.lua``'s KEYS: the record, its shard's state counter and, unless the
        initial state is terminal (never indexed), that state's index. One slot."""
        keys = [self.key(record.job_id), self.counter_key(record.job_id)]
        if not record.state.is_terminal:
            keys.append(self.index_key(record.state, record.job_id))
        return keys

    def create_eval_args(self, record: JobRecord) -> tuple[JobRecord, list[Any]]:
        """``EVAL`` arguments that create ``record`` (for a pipeline another library owns).

        EVAL, not EVALSHA: a pipeline we do not execute ourselves cannot recover from
        NOSCRIPT (Redis restarted), and Redis caches the compiled script either way.
        """
        stamped, args = self.create_command(record)
        keys = self.create_keys(stamped)
        return stamped, ["EVAL", CREATE_LUA, len(keys), *keys, *args]

    def apply(
        self,
        transition: Transition,
        job_id: str,
        /,
        *,
        expect: Mapping[str, str | float | None] | None = None,
        incr: Mapping[str, float] | None = None,
        durable: bool = False,
        outage_patience_s: float = 0.0,
        **fields: Any,
    ) -> tuple[JobRecord | None, bool]:
        """Run one named ``transition`` on ``job_id``: the only write to an existing record.

        Only the table's transitions run (``lifecycle.ALL``, or one narrowed by
        ``only_from``). It applies (atomically, in ``update.lua``) only while the job is in
        one of the transition's sources and every guard field holds its ``expect`` value
        (``None`` = absent; exactly the transition's guards must be given). ``fields`` are
        what the transition takes (each of its type), written with its fixed values;
        ``incr`` adds to its counters, with its fixed bumps; its ``unsets`` are removed
        (``Transition.writes`` refuses anything else). Returns ``(record,
        applied)``; the record is the current one either way, ``None`` if the job does
        not exist.

        ``durable``: a write that must survive a failover (a create's task id): ``WAIT``
        for NBQ_STORE_WAIT_REPLICAS replicas in the same round trip. ``outage_patience_s``
        > 0: retry while the store is briefly away (a restart, a Sentinel or Cluster
        failover) for up to that long, for the one write that must not be dropped (a paid
        create's task id). A retry may find that the lost attempt had applied (then
        ``applied`` is False and the record shows the caller's own fields: the caller
        compares). Raises the last store error after the patience.
        """
        if not declared(transition):
            raise IllegalTransitionError(
                f"{transition.name} is not a transition of workers/jobs/lifecycle.py's table"
            )
        given = dict(expect or {})
        if set(given) != set(transition.guards):
            raise IllegalTransitionError(
                f"{transition.name} is guarded by {list(transition.guards)}, got {list(given)}"
            )
        writes, adds = transition.writes(fields, incr)
        if outage_patience_s <= 0:
            return self._write(transition, job_id, given, writes, adds, durable)
        deadline = time.monotonic() + outage_patience_s
        pause_s = 0.2
        while True:
            try:
                return self._write(transition, job_id, given, writes, adds, durable)
            except STORE_AWAY:
                if time.monotonic() + pause_s > deadline:
                    raise
                time.sleep(pause_s)  # bounded: the patience in all, never a poll loop
                pause_s = min(pause_s * 2, 2.0)

    def _write(
        self,
        transition: Transition,
        job_id: str,
        expect: Mapping[str, str | float | None],
        set_fields: Mapping[str, Any],
        incr: Mapping[str, float],
        durable: bool,
    ) -> tuple[JobRecord | None, bool]:
        keys = self.update_keys(job_id)
        args = _update_args(
            job_id,
            transition.target,
            sorted(transition.sources),
            retention_s=self.retention_s,
            expect=expect,
            set_fields=set_fields,
            incr=incr,
            unset=list(transition.unsets),
            outbox_producers=sorted(self.outbox_producers),
            count_here=self.state_counts is None,
            touch_index=not transition.keeps_index_time,
            publish=(self.end_channel_prefix or "") if transition.target in END_STATES else "",
        )
        if durable and self.wait_replicas:
            command = ["EVAL", UPDATE_LUA, len(keys), *keys, *args]
            applied, flat = self._durably(command, job_id)
        else:
            applied, flat = self._update(keys=keys, args=args)
        data = _pairs_to_dict(flat)
        if not data:
            return None, False
        data.setdefault("job_id", job_id)
        record = JobRecord.from_hash(data)
        if applied and transition.target is not None and self.state_counts is not None:
            # No transition's target is among its sources: an applied one moved the job
            # (or a retried call found its own uncounted move).
            self.state_counts(transition.target.value)
        if applied and transition.target in END_STATES:
            self._tell_end(record, at=str(args[0]))
        return record, bool(applied)

    def _tell_end(self, record: JobRecord, *, at: str) -> None:
        self.call_listeners(self.end_listeners, record)
        if not self.outbox_listeners or not self.is_told(record):
            return
        if self.call_listeners(self.outbox_listeners, record):
            self.outbox_done(record.job_id, at)

    def tell_progress(self, before: JobRecord | None, after: JobRecord | None) -> None:
        """Tell the progress listeners when ``after`` (the winning write's record) is at
        another step (progress value or state) than ``before``: one call per step."""
        if not self.progress_listeners or after is None:
            return
        if before is not None and (before.progress, before.state) == (after.progress, after.state):
            return
        self.call_listeners(self.progress_listeners, after)

    def outbox_done(self, job_id: str, at: str) -> None:
        """The end at ``at`` (the end write's stamp) was told: drop its outbox entry."""
        self.redis.zrem(self.outbox_key(job_id), f"{job_id}|{at}")

    def outbox_due(self, *, before: float, limit: int = 1000) -> list[tuple[str, str]]:
        """Outbox entries written before ``before``, oldest first: ``(job_id, at)``."""
        pipe = self.redis.pipeline(transaction=False)  # one round trip per cluster node
        for key in self.outbox_keys():
            pipe.zrangebyscore(key, "-inf", before, start=0, num=limit, withscores=True)
        merged = heapq.merge(*pipe.execute(), key=lambda pair: pair[1])
        due = []
        for member, _ in itertools.islice(merged, limit):
            text = member.decode() if isinstance(member, bytes) else str(member)
            job_id, _, at = text.rpartition("|")
            due.append((job_id, at))
        return due

    @staticmethod
    def call_listeners(listeners: list[Callable[[JobRecord], None]], record: JobRecord) -> bool:
        """Call each listener; True if none raised (a failure is logged, never raised:
        it never undoes the write)."""
        ok = True
        for listener in listeners:
            try:
                listener(record)
            except Exception as exc:
                ok = False
                from nanobanana_queue.workers.logs import get_logger

                get_logger("nbq.store").warning(
                    "end_listener_failed", job_id=record.job_id, error=type(exc).__name__
                )
        return ok

    def forget(self, job_id: str) -> None:
        """Drop a vanished record's index entries (expired or evicted): they would
        otherwise sit at the head of every scan (and count as in flight) forever."""
        pipe = self.redis.pipeline(transaction=False)
        for state in INDEXED_STATES:
            pipe.zrem(self.index_key(state, job_id), job_id)
        pipe.execute()

    def update_keys(self, job_id: str) -> list[str]:
        """``update.lua``'s KEYS: the record, its shard's state counter, the job's index
        of every state that has one (``INDEXED_STATES``, in that order) and its shard's
        notify outbox. One slot."""
        return [
            self.key(job_id),
            self.counter_key(job_id),
            *(self.index_key(state, job_id) for state in INDEXED_STATES),
            self.outbox_key(job_id),
        ]

    def _durably(self, command: list[Any], job_id: str) -> Any:
        """Run one script and ``WAIT`` on the same connection, in one round trip.

        EVAL, not EVALSHA: redis-py would add a ``SCRIPT EXISTS`` round trip for a script
        in a pipeline. A retried pipeline is safe: both scripts recognise their own run.
        """
        if self._on_cluster:
            return self._durably_on_cluster(command, job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        pipe.execute_command(  # type: ignore[no-untyped-call]
            "WAIT", self.wait_replicas, self.wait_timeout_ms
        )
        reply, acked = pipe.execute()
        self.check_replicas(int(acked), job_id)
        return reply

    def _durably_on_cluster(self, command: list[Any], job_id: str) -> Any:
        """``_durably`` on a Redis Cluster: the script and ``WAIT`` on one connection of
        the master that owns the job's slot (the cluster client would send ``WAIT`` to
        every primary on other connections, and ``WAIT`` counts only its own
        connection's writes).

        A redirect (resharding) or a lost or demoted master (failover) sends the same
        command through the cluster client, which follows the cluster; that write is
        reported as not replicated (no ``WAIT`` covered it) and goes on. Sending it again
        is safe: both scripts recognise their own run by its stamp.
        """
        cluster: Any = self.redis  # a RedisCluster (typed as Redis, like the client)
        try:
            node = cluster.get_redis_connection(cluster.get_node_from_key(command[3]))
            pipe = node.pipeline(transaction=False)  # a plain Redis: this node only
            pipe.execute_command(*command)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            reply, acked = pipe.execute()
        except CLUSTER_REROUTE as exc:
            reply = cluster.execute_command(*command)
            self.check_replicas(0, job_id, rerouted=type(exc).__name__)
            return reply
        self.check_replicas(int(acked), job_id)
        return reply

    def check_replicas(self, acked: int, job_id: str, *, rerouted: str | None = None) -> bool:
        """Log (and go on) when fewer replicas than asked acknowledged a write in time:
        the write is on the master and is lost only if it fails over right now.
        ``rerouted``: why a cluster write went without its ``WAIT`` (an error's name)."""
        if acked >= self.wait_replicas:
            return True
        from nanobanana_queue.workers.logs import get_logger

        get_logger("nbq.store").warning(
            "store_write_not_replicated",
            job_id=job_id,
            replicas_acked=acked,
            replicas_wanted=self.wait_replicas,
            wait_timeout_ms=self.wait_timeout_ms,
            **({"rerouted": rerouted} if rerouted else {}),
        )
        return False


def _update_args(
    job_id: str,
    to: JobState | None,
    allowed: list[JobState],
    *,
    retention_s: int,
    expect: Mapping[str, str | float | None],
    set_fields: Mapping[str, Any],
    incr: Mapping[str, float],
    unset: list[str],
    outbox_producers: Sequence[str] = (),
    count_here: bool = True,
    touch_index: bool = True,
    publish: str = "",
) -> list[Any]:
    """``update.lua``'s ARGV, in the order its header documents."""
    args: list[Any] = [
        repr(time.time()),  # also the call's stamp: a retry recognises its own run
        to.value if to is not None else "",
        retention_s,
        job_id,
        *(state.value for state in INDEXED_STATES),  # the states of KEYS[3..]
        len(allowed),
        *(state.value for state in allowed),
        len(expect),
    ]
    for name, expected in expect.items():
        args += [name, _expected(expected)]
    args.append(len(set_fields))
    for name, value in set_fields.items():
        args += [name, encode_field(name, _jsonable(value))]
    args.append(len(incr))
    for name, amount in incr.items():
        args += [name, amount]
    args.append(len(unset))
    args += unset
    args.append(len(outbox_producers))
    args += list(outbox_producers)
    if not count_here or not touch_index or publish:
        # "0": the caller counts the move (JobStore.state_counts)
        args.append("1" if count_here else "0")
    if not touch_index or publish:
        # "0": a note that keeps its index score (keeps_index_time)
        args.append("1" if touch_index else "0")
    if publish:
        args.append(publish)  # an end publishes <publish>:jobend:<job id> in the script
    return args


def _expected(value: str | float | None) -> str:
    """A guard's value as the hash holds it (a float as the stores write it: ``repr``)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else repr(value)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, JobState):
        return value.value
    return value
