"""Fair share between producers (issue 28): a backlog of A must not make B wait.

``python -m benchmarks.fair_share [--out FILE] [--a-jobs N] [--b-jobs N] [--rate R]``

The emulator's create rate is the bottleneck (``NBQ_CREATES_PER_S``, as an account limit
in production). Every figure is a ratio within one run, never a timed assertion:

* **latency** — A enqueues ``a_jobs`` at once; ``b_delay_s`` later B enqueues ``b_jobs``,
  one per second. B's p50/p95 enqueue→stored against B alone on the same stack, A's
  throughput against A alone. Run with the gate and without it (``unfair_worker``: the
  FIFO behaviour before the change), in the same format.
* **split** — A and B each enqueue a backlog at once; the share of creates B got while
  both had work (from the emulator's own create log), against the weights' share, with
  weights 1:1 and A:B = 3:1, with and without the gate.

Scaled down from the issue's 3,000 jobs (the machine has two cores, shared): the same
quantities, fewer jobs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import BenchStack, bench_stack

REQUEST = {"prompt": "fair share", "size": "1:1", "quality": "1K"}
UNFAIR = "benchmarks.unfair_worker"


def _reset(stack: BenchStack, *, weights: str = "", unfair: bool = False) -> None:
    for proc in stack.workers:
        proc.terminate()
    for proc in stack.workers:
        proc.wait(timeout=60)
    stack.workers.clear()
    stack.redis.client().flushall()
    stack.emulator.control("POST", "reset")
    stack.overrides["NBQ_PRODUCER_WEIGHTS"] = weights
    from benchmarks.harness import use_env

    use_env(stack.env())
    from nanobanana_queue.workers.runtime import reset_runtime

    reset_runtime()
    stack.start_worker(
        queues="submit,poll,download", concurrency=8, name="w", module=UNFAIR if unfair else None
    )


def _wait_stored(stack: BenchStack, job_ids: list[str], timeout_s: float) -> dict[str, Any]:
    producer = stack.producer()
    deadline = time.monotonic() + timeout_s
    pending = set(job_ids)
    records: dict[str, Any] = {}
    while pending and time.monotonic() < deadline:
        for job_id in list(pending):
            record = producer.status(job_id)
            if record.is_terminal:
                records[job_id] = record
                pending.discard(job_id)
        time.sleep(0.5)
    if pending:
        raise TimeoutError(f"{len(pending)} jobs not done")
    return records


def _latencies(records: dict[str, Any]) -> list[float]:
    return sorted(r.state_times["stored"] - r.created_at for r in records.values())


def _pct(values: list[float], q: float) -> float:
    return round(float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]), 3)


def _throughput(records: dict[str, Any]) -> float:
    start = min(r.created_at for r in records.values())
    end = max(r.state_times["stored"] for r in records.values())
    return round(len(records) / float(end - start), 3)


def _enqueue(stack: BenchStack, name: str, n: int, every_s: float = 0.0) -> list[str]:
    producer = stack.producer()
    ids = []
    for _ in range(n):
        ids.append(producer.enqueue(REQUEST, producer=name).job_id)
        if every_s:
            time.sleep(every_s)
    return ids


def _latency_run(stack: BenchStack, args: argparse.Namespace, *, unfair: bool) -> dict[str, Any]:
    import threading

    timeout = args.a_jobs / args.rate * 3 + 120
    _reset(stack, unfair=unfair)
    b_alone = _wait_stored(stack, _enqueue(stack, "b", args.b_jobs, 1.0), timeout)
    _reset(stack, unfair=unfair)
    a_alone = _wait_stored(stack, _enqueue(stack, "a", args.a_jobs), timeout)
    _reset(stack, unfair=unfair)
    a_ids = _enqueue(stack, "a", args.a_jobs)
    b_ids: list[str] = []
    time.sleep(args.b_delay_s)
    sender = threading.Thread(target=lambda: b_ids.extend(_enqueue(stack, "b", args.b_jobs, 1.0)))
    sender.start()
    sender.join()
    both = _wait_stored(stack, a_ids + b_ids, timeout)
    b_both = {j: both[j] for j in b_ids}
    a_both = {j: both[j] for j in a_ids}
    b_lat, b_alone_lat = _latencies(b_both), _latencies(b_alone)
    return {
        "b_p50_s": _pct(b_lat, 50),
        "b_p95_s": _pct(b_lat, 95),
        "b_alone_p50_s": _pct(b_alone_lat, 50),
        "b_alone_p95_s": _pct(b_alone_lat, 95),
        "b_p95_vs_alone": round(_pct(b_lat, 95) / _pct(b_alone_lat, 95), 3),
        "a_throughput_per_s": _throughput(a_both),
        "a_alone_throughput_per_s": _throughput(a_alone),
        "a_throughput_vs_alone": round(_throughput(a_both) / _throughput(a_alone), 3),
    }


def _creates(stack: BenchStack) -> list[str]:
    tasks = stack.emulator.control("GET", "tasks")
    keys = [t["idempotency_key"] for t in sorted(tasks, key=lambda t: t["created_at"])]
    return [k.removeprefix("nbq-").split("~", 1)[0] for k in keys]


def _split_run(
    stack: BenchStack, args: argparse.Namespace, weights: tuple[int, int], *, unfair: bool
) -> dict[str, Any]:
    _reset(stack, weights=f"a:{weights[0]},b:{weights[1]}", unfair=unfair)
    ids = _enqueue(stack, "a", args.split_jobs) + _enqueue(stack, "b", args.split_jobs)
    _wait_stored(stack, ids, args.split_jobs * 2 / args.rate * 3 + 120)
    order = _creates(stack)
    # While both had work: up to the first producer's last create.
    end = min(len(order) - 1 - order[::-1].index(p) for p in ("a", "b"))
    window = order[: end + 1]
    b_share = window.count("b") / len(window)
    expected = weights[1] / sum(weights)
    return {
        "weights_a_b": list(weights),
        "creates_while_both_waited": len(window),
        "b_share": round(b_share, 3),
        "b_share_expected": round(expected, 3),
        "b_share_error": round(abs(b_share - expected) / expected, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--a-jobs", type=int, default=400)
    parser.add_argument("--b-jobs", type=int, default=10)
    parser.add_argument("--b-delay-s", type=float, default=5.0)
    parser.add_argument("--split-jobs", type=int, default=150)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/nbq-bench-fair"))
    args = parser.parse_args(argv)
    overrides = {"NBQ_CREATES_PER_S": str(args.rate)}
    result: dict[str, Any] = {"inputs": {k: str(v) for k, v in vars(args).items()}}
    with bench_stack(args.workdir, 0.02, overrides=overrides) as stack:
        for label, unfair in (("before", True), ("after", False)):
            result[label] = {
                "latency": _latency_run(stack, args, unfair=unfair),
                "split_1_1": _split_run(stack, args, (1, 1), unfair=unfair),
                "split_3_1": _split_run(stack, args, (3, 1), unfair=unfair),
            }
            print(label, json.dumps(result[label]), flush=True)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
