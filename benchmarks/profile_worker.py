"""Profile a pipeline worker under B1's load with py-spy; print the hottest frames.

    python -m benchmarks.profile_worker --jobs 300 [--queues submit,poll,download]
    python -m benchmarks.profile_worker --pool prefork --concurrency 4  # B1io's worker

py-spy samples the worker process from outside (no code change); by default only the
thread holding the GIL is sampled, so the shares are the worker's CPU (what caps B1's
single GIL-bound process), not time spent waiting on sockets; with ``--pool prefork``
the pool's children are sampled too (``--subprocesses``), each on its own GIL. The raw
stacks are folded into self and inclusive sample counts per function. Needs ``py-spy``
(pip) and permission to ptrace a child process (the default for your own children).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
from pathlib import Path

from benchmarks.b1_throughput import PRODUCTION_LOGS, TIME_SCALE, WARMUP_JOBS
from benchmarks.harness import bench_stack
from benchmarks.pipeline_run import run_jobs


def fold(raw: Path, top: int) -> str:
    """Self and inclusive shares per frame from py-spy's collapsed ``raw`` output."""
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        self_time[frames[-1]] += count
    lines = [f"samples: {total}", "", "inclusive %  function"]
    lines += [f"{100 * n / total:10.1f}  {f}" for f, n in inclusive.most_common(top)]
    lines += ["", "self %      function"]
    lines += [f"{100 * n / total:10.1f}  {f}" for f, n in self_time.most_common(top)]
    return "\n".join(lines)


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" → "func (file.py)" so line numbers do not split a function.
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    return f"{name} ({'/'.join(parts[-2:])})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--queues", default="submit,poll,download")
    parser.add_argument("--pool", choices=("threads", "prefork"), default="threads")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--patched", action="store_true", help="run benchmarks.patched_worker (proposed fixes)"
    )
    parser.add_argument(
        "--all-threads",
        action="store_true",
        help="sample every running thread (wall time), not only the one holding the GIL",
    )
    parser.add_argument(
        "--wall",
        action="store_true",
        help="wall time: every thread, idle (waiting on a socket) included (py-spy --idle)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/profile-worker.txt"))
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy not found: pip install py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="nbq-profile-"))
    raw = workdir / "worker.raw"
    with bench_stack(workdir, TIME_SCALE, overrides=PRODUCTION_LOGS) as stack:
        proc = stack.start_worker(
            queues=args.queues,
            pool=args.pool,
            concurrency=args.concurrency,
            name="pipe",
            module="benchmarks.patched_worker"
            if args.patched
            else "nanobanana_queue.producers.cli.main",
        )
        run_jobs(stack, WARMUP_JOBS, workers={"pipe": proc.pid}, timeout_s=120, fetch_records=False)
        recorder = subprocess.Popen(
            [spy, "record", "--pid", str(proc.pid), "--format", "raw", "--rate", "200",
             "--output", str(raw), "--nonblocking",
             *([] if args.all_threads or args.wall else ["--gil"]),
             *(["--idle"] if args.wall else []),
             *(["--subprocesses"] if args.pool == "prefork" else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result = run_jobs(stack, args.jobs, workers={"pipe": proc.pid}, timeout_s=600)
        recorder.send_signal(2)
        recorder.wait(timeout=30)
    report = f"jobs/s: {result.jobs_per_s:.1f}\n" + fold(raw, args.top)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + "\n")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
