"""What a Sentinel failover loses, and what ``WAIT`` (NBQ_STORE_WAIT_REPLICAS) costs.

    python -m benchmarks.sentinel_failover [--enqueues 1000] [--out PATH]

On a benchmark-owned master + replica + three sentinels (the tests' group), no workers:

1. Enqueue rate: ``Producer.enqueue`` (record + message in one round trip) with
   ``NBQ_STORE_WAIT_REPLICAS=0`` and ``=1``, alternating rounds; median of each, ratio.
2. Loss: ``THREADS`` producers enqueue as fast as they can; the master is SIGKILLed; they
   go on until the replica is promoted and a second after. Every job id a producer was
   told about is looked up on the new master: ``lost`` = told about, but gone. Once with
   ``WAIT`` off, once on (each on a fresh group); then again with the replica lagging
   (its link cut ``LAG_S`` before the kill).

Prints the numbers and writes JSON (default benchmarks/results/sentinel.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import REQUEST, use_env, wait_off_on_rates

THREADS = 4
ROUNDS = 3
RUN_BEFORE_KILL_S = 1.0
RUN_AFTER_FAILOVER_S = 1.0
#: The lagging-replica scenario: the replica's link cut this long before the master dies
#: (the replica re-connects within a second; the kill falls inside that gap).
LAG_S = 0.3


def _group(workdir: Path) -> Any:
    from tests.support.redis_server import RedisServer
    from tests.support.sentinel import SentinelGroup

    (workdir / "master").mkdir(parents=True)
    (workdir / "replica").mkdir()
    group = SentinelGroup(
        dir=workdir,
        master=RedisServer(dir=workdir / "master"),
        replica=RedisServer(dir=workdir / "replica"),
    )
    group.start()
    return group


def _producer(group: Any, wait_replicas: int) -> Any:
    use_env(
        {
            **group.env(),
            "NBQ_REDIS_URL": group.url(),
            "NBQ_EVOLINK_API_KEY": "bench",
            "NBQ_STORE_WAIT_REPLICAS": str(wait_replicas),
            "NBQ_STORE_WAIT_TIMEOUT_MS": "100",
            "NBQ_TASK_EVENTS": "true",
        }
    )
    from nanobanana_queue.producers.api import Producer
    from nanobanana_queue.workers.settings import get_settings

    return Producer(get_settings())


def enqueue_rates(workdir: Path, n: int) -> dict[str, Any]:
    group = _group(workdir / "rate")
    try:
        producers = {w: _producer(group, w) for w in (0, 1)}
        calls = {
            w: (lambda p=p: p.enqueue(REQUEST, producer="bench")) for w, p in producers.items()
        }
        return wait_off_on_rates(calls, n, ROUNDS)
    finally:
        group.stop()


def failover_loss(workdir: Path, wait_replicas: int, lag_s: float = 0.0) -> dict[str, Any]:
    """``lag_s`` > 0: the replica's link to the master is cut (``CLIENT KILL TYPE master``
    on the replica) that long before the master dies: every write of that time exists
    only on the master (what a partition or a lagging link does). A paused (SIGSTOPped)
    replica loses nothing on loopback: the stream waits in its socket buffer."""
    from nanobanana_queue.producers.errors import EnqueueUncertainError

    group = _group(workdir / f"loss-wait{wait_replicas}-lag{lag_s}")
    try:
        producer = _producer(group, wait_replicas)
        told: list[str] = []
        refused: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def enqueue_loop() -> None:
            while not stop.is_set():
                try:
                    job_id = producer.enqueue(REQUEST).job_id
                    with lock:
                        told.append(job_id)
                except EnqueueUncertainError as exc:
                    with lock:
                        refused.append(exc.job_id)

        threads = [threading.Thread(target=enqueue_loop, daemon=True) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        time.sleep(RUN_BEFORE_KILL_S)
        if lag_s:
            group.replica.client().client_kill_filter(_type="master")
            time.sleep(lag_s)
        with lock:
            told_before_kill = len(told)
        group.kill_master()
        killed = time.monotonic()
        group.wait_failover()
        failover_s = time.monotonic() - killed
        time.sleep(RUN_AFTER_FAILOVER_S)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        store = producer.runtime.store
        pipe = store.redis.pipeline(transaction=False)
        for job_id in told:
            pipe.exists(store.key(job_id))
        present = pipe.execute()
        lost = [j for j, ok in zip(told, present, strict=True) if not ok]
        return {
            "wait_replicas": wait_replicas,
            "replica_lag_s": lag_s,
            "threads": THREADS,
            "enqueued_told": len(told),
            "enqueued_before_kill": told_before_kill,
            "refused_uncertain": len(refused),
            "failover_s": round(failover_s, 2),
            "lost": len(lost),
        }
    finally:
        group.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enqueues", type=int, default=1000)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "sentinel.json"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nbq-sentinel-") as tmp:
        workdir = Path(tmp)
        result: dict[str, Any] = {
            "enqueue_rate": enqueue_rates(workdir, args.enqueues),
            "failover_loss": [
                failover_loss(workdir, w, lag) for lag in (0.0, LAG_S) for w in (0, 1)
            ],
        }
    rate = result["enqueue_rate"]
    print(
        f"enqueue/s WAIT off {rate['wait_off_per_s']}, on {rate['wait_on_per_s']} "
        f"(ratio {rate['ratio_on_off']})"
    )
    for loss in result["failover_loss"]:
        print(
            f"WAIT {loss['wait_replicas']}, replica lag {loss['replica_lag_s']} s: "
            f"told {loss['enqueued_told']} "
            f"(refused {loss['refused_uncertain']}), failover {loss['failover_s']} s, "
            f"lost {loss['lost']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
