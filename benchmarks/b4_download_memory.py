"""B4: peak RSS of a download worker storing a 1 MB and then a 50 MB result.

The emulator's ``large_file`` fault serves a PNG header plus N zero bytes in 64 KiB
chunks. The download worker runs alone on its queue with one thread, and psutil samples
its RSS every few milliseconds while each job is in flight.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.harness import PeakSampler, bench_stack, tree_rss_bytes
from benchmarks.results import BenchResult
from nanobanana_queue.devstack.procs import wait_until

if TYPE_CHECKING:
    from nanobanana_queue.producers.api import Producer
    from nanobanana_queue.workers.jobs.record import JobRecord

TIME_SCALE = 0.01
TARGET_EXTRA_BYTES = 20 * 2**20
SIZES = {"1MB": 2**20, "50MB": 50 * 2**20}


def run(workdir: Path) -> BenchResult:
    with bench_stack(workdir / "b4", TIME_SCALE) as stack:
        stack.start_worker(queues="submit,poll", concurrency=4, name="sp")
        dl = stack.start_worker(queues="download", concurrency=1, name="dl")
        producer = stack.producer()
        _one_job(producer)  # warm up: clients, bucket, imports
        peaks: dict[str, int] = {}
        before: dict[str, int] = {}
        for label, size in SIZES.items():
            stack.emulator.control(
                "POST",
                "faults",
                {"endpoint": "file", "action": "large_file", "bytes": size, "count": 1},
            )
            before[label] = tree_rss_bytes(dl.pid)
            with PeakSampler(dl.pid, interval_s=0.003) as sampler:
                record = _one_job(producer)
            peaks[label] = sampler.peak
            if record.state.value != "stored":
                raise RuntimeError(f"{label} job ended {record.state.value}: {record.error}")
    extra = peaks["50MB"] - peaks["1MB"]
    return BenchResult(
        id="B4",
        title="download memory, 50 MB vs 1 MB result",
        value=round(extra / 2**20, 2),
        unit="MB above the 1 MB case",
        target="<= 20 MB",
        passed=extra <= TARGET_EXTRA_BYTES,
        inputs={"sizes_bytes": SIZES, "sample_interval_s": 0.003, "worker": "download, threads x1"},
        raw={
            "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in peaks.items()},
            "rss_before_mb": {k: round(v / 2**20, 1) for k, v in before.items()},
        },
    )


def _one_job(producer: Producer) -> JobRecord:
    handle = producer.enqueue({"prompt": "benchmark: big file", "size": "1:1", "quality": "1K"})
    holder: list[JobRecord] = []

    def done() -> bool:
        record = handle.status()
        if record.is_terminal:
            holder.append(record)
            return True
        return False

    wait_until(done, timeout_s=180, interval_s=0.05, what="download job")
    time.sleep(0.1)
    return holder[0]
