"""What ``WAIT`` (NBQ_STORE_WAIT_REPLICAS) costs on a Redis Cluster job store.

    python -m benchmarks.cluster_wait [--creates 1000] [--rounds 3] [--out PATH]

On a benchmark-owned 3-master + 3-replica cluster (the tests' ``RedisCluster``) and a
plain Redis broker, no workers: ``JobStore.create`` (the store alone) and
``Producer.enqueue`` (record, then message: the two-step enqueue a cluster store takes)
with ``NBQ_STORE_WAIT_REPLICAS=0`` and ``=1``, alternating rounds, one thread; the median
of each, and the ratio. Prints the numbers and writes JSON (default
benchmarks/results/cluster-wait.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import REQUEST, use_env, wait_off_on_rates

OUT = Path(__file__).resolve().parent / "results" / "cluster-wait.json"
WARM_UP = 50


def _env(cluster_url: str, broker_url: str, wait_replicas: int) -> dict[str, str]:
    return {
        "NBQ_BROKER_URL": broker_url,
        "NBQ_REDIS_URL": cluster_url,
        "NBQ_EVOLINK_API_KEY": "bench",
        "NBQ_STORE_WAIT_REPLICAS": str(wait_replicas),
        "NBQ_STORE_WAIT_TIMEOUT_MS": "100",
    }


def measure(workdir: Path, n: int, rounds: int) -> dict[str, Any]:
    from tests.support.redis_cluster import RedisCluster
    from tests.support.redis_server import RedisServer

    cluster = RedisCluster(dir=workdir / "cluster", replicas_per_master=1)
    broker = RedisServer(dir=workdir / "broker")
    (workdir / "broker").mkdir(parents=True)
    cluster.start()
    broker.start()
    try:
        for port in cluster.ports[: cluster.masters]:
            cluster.replica_of(port)  # every replica in sync before measuring
        from nanobanana_queue.producers.api import Producer
        from nanobanana_queue.workers.jobs.record import JobRecord
        from nanobanana_queue.workers.settings import get_settings

        producers = {}
        for wait in (0, 1):
            use_env(_env(cluster.url, broker.url, wait))
            producers[wait] = Producer(get_settings())
        stores = {w: p.runtime.store for w, p in producers.items()}
        assert [s.wait_replicas for s in stores.values()] == [0, 1]

        def create(wait: int) -> Callable[[], object]:
            return lambda: stores[wait].create(JobRecord(job_id=uuid.uuid4().hex))

        def enqueue(wait: int) -> Callable[[], object]:
            return lambda: producers[wait].enqueue(REQUEST, producer="bench")

        return {
            "cluster": f"{cluster.masters} masters + {cluster.masters} replicas, loopback",
            "store_create": wait_off_on_rates({w: create(w) for w in (0, 1)}, n, rounds),
            "producer_enqueue": wait_off_on_rates({w: enqueue(w) for w in (0, 1)}, n, rounds),
        }
    finally:
        broker.stop()
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--creates", type=int, default=1000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nbq-cluster-wait-") as tmp:
        result = measure(Path(tmp), args.creates, args.rounds)
    for name in ("store_create", "producer_enqueue"):
        rate = result[name]
        print(
            f"{name}/s WAIT 0: {rate['wait_off_per_s']}, WAIT 1: {rate['wait_on_per_s']} "
            f"(ratio {rate['ratio_on_off']}; rounds {rate['wait_off_rounds']} vs "
            f"{rate['wait_on_rounds']})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
