"""Per fault, how long until a lost worker is known and its jobs move again (issue 26).

Runs from a checkout (it borrows the tests' servers and stack, ``tests/support``) with
the recovery settings at their defaults — ``NBQ_WORKER_LEASE_S=15``,
``NBQ_RECONCILE_INTERVAL_S=30``, ``NBQ_STUCK_AFTER_S=120``, ``NBQ_SUBMIT_TIME_LIMIT_S=90``
— so the numbers are what a deployment gets::

    python -m benchmarks.recovery_times [--lease 15] [--only sigkill-create,...]

For each fault: *detect* is the time from the fault to the reconciler's ``reaped`` line
naming the lost worker (the lease pass); *resume* is the time from the fault to the
affected job's next step (a mid-create job decided ``outcome_unknown``, a poll chain
stored, a job held in a restarted Redis stored). A mid-create job's next step is the
reconciler's decision that its create's outcome is unknown (it is failed
``outcome_unknown`` by the next submit worker, never created again). Also prints the
creates the emulator accepted per job (must be ≤ 1) and what is left in ``unacked``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import creates_per_job, enqueue, kill_hard, wait_for_hits
from tests.support.emulator_server import EmulatorServer
from tests.support.procs import child_pids, wait_until
from tests.support.redis_server import RedisServer
from tests.support.s3_server import S3Server
from tests.support.stack import Stack

DEFAULTS = {
    "NBQ_RECONCILE_INTERVAL_S": "30",
    "NBQ_STUCK_AFTER_S": "120",
    "NBQ_SUBMIT_TIME_LIMIT_S": "90",
    "NBQ_DOWNLOAD_TIMEOUT_S": "60",
    "NBQ_HTTP_READ_TIMEOUT_S": "30",
    # The test stack's 60 s would fail a job the old rules re-drive after two minutes.
    "NBQ_POLL_DEADLINE_S": "900",
    "NBQ_BREAKER_PROBE_INTERVAL_S": "60",
}
_LOST = re.compile(r"^(\S+Z) \[warning\s*\] submit_process_lost", re.M)
_CLOSED = re.compile(r"^(\S+Z) \[warning\s*\] quota_breaker_closed", re.M)
_REAPED = re.compile(r"^(\S+Z) \[warning\s*\] reaped\s+dead_workers=\[([^\]]*)\]", re.M)


def _reaped_at(stack: Stack, victim: str) -> float | None:
    for stamp, dead in _REAPED.findall(stack.worker_logs()):
        if victim in dead:
            return _stamp(stamp)
    return None


def _logged_at(stack: Stack, line: re.Pattern[str]) -> float | None:
    """When a worker first logged ``line`` (its first group is the timestamp)."""
    found = line.search(stack.worker_logs())
    return _stamp(found.group(1)) if found else None


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _await(check: Callable[[], bool], what: str, timeout_s: float = 300) -> float:
    wait_until(check, timeout_s=timeout_s, interval_s=0.1, what=what)
    return time.time()


def mid_create(
    stack: Stack, *, freeze_s: float | None, same_name: bool = False, child: bool = False
) -> dict[str, float]:
    """SIGKILL (or SIGSTOP for ``freeze_s``) the only submit worker inside a create; with
    ``same_name`` it is restarted under its own name (a container restart); with
    ``child`` only its prefork pool process is killed (the main process lives on)."""
    rule = stack.emulator.add_fault(
        endpoint="create", action="delay", seconds=25.0, count=1, match="bench"
    )
    victim = stack.start_worker(
        name="victim", queues="submit", pool="prefork" if child else "threads", concurrency=1
    )
    stack.start_worker(name="rescuer", queues="poll,download")  # runs a reconciler too
    producer = stack.producer()
    [job_id] = enqueue(producer, 1, prompt="bench")
    wait_for_hits(stack, rule)
    t0 = time.time()
    if child:
        os.kill(child_pids(victim.pid)[0], signal.SIGKILL)
    elif freeze_s is None:
        kill_hard(victim)
        if same_name:
            stack.spawn_worker(name="victim", queues="submit", pool="threads", concurrency=1)
    else:
        os.killpg(victim.pid, signal.SIGSTOP)
    resumed = _await(lambda: producer.status(job_id).create_outcome_unknown, "decided")
    if child or same_name:
        pass
    elif freeze_s is None:
        stack.start_worker(name="submitter", queues="submit")
    else:
        time.sleep(max(0.0, t0 + freeze_s - time.time()))
        os.killpg(victim.pid, signal.SIGCONT)
    _await(lambda: producer.status(job_id).state is JobState.FAILED, "failed outcome_unknown")
    detected = (_logged_at(stack, _LOST) if child else _reaped_at(stack, "victim@")) or float("nan")
    return {
        "detect_s": detected - t0,
        "resume_s": resumed - t0,
        "creates": float(creates_per_job(stack, [job_id]).get(job_id, 0)),
    }


def mid_query(stack: Stack) -> dict[str, float]:
    """SIGKILL the only poll worker inside a query; another poll worker is running."""
    rule = stack.emulator.add_fault(
        endpoint="query", action="delay", seconds=10.0, count=1, match="bench"
    )
    stack.start_worker(name="rescuer", queues="submit,download")
    victim = stack.start_worker(name="victim", queues="poll")
    producer = stack.producer()
    [job_id] = enqueue(producer, 1, prompt="bench")
    wait_for_hits(stack, rule)
    stack.start_worker(name="poller", queues="poll")
    t0 = time.time()
    kill_hard(victim)
    resumed = _await(lambda: producer.status(job_id).state is JobState.STORED, "stored")
    detected = _reaped_at(stack, "victim@") or float("nan")
    return {
        "detect_s": detected - t0,
        "resume_s": resumed - t0,
        "creates": float(creates_per_job(stack, [job_id]).get(job_id, 0)),
    }


def redis_restart(stack: Stack) -> dict[str, float]:
    """Restart Redis (AOF) while the worker holds a job's countdown poll."""
    stack.overrides["NBQ_POLL_MIN_INTERVAL_S"] = "8"
    stack.overrides["NBQ_DEFAULT_ESTIMATED_TIME_S"] = "8"
    stack.start_worker(name="worker")
    producer = stack.producer()
    [job_id] = enqueue(producer, 1, prompt="bench")
    _await(lambda: producer.status(job_id).state is JobState.GENERATING, "generating", 60)
    time.sleep(1)
    t0 = time.time()
    stack.redis.restart()
    resumed = _await(lambda: producer.status(job_id).state is JobState.STORED, "stored")
    return {"detect_s": float("nan"), "resume_s": resumed - t0, "creates": 1.0}


def s3_outage(stack: Stack, *, seconds: float = 30.0) -> dict[str, float]:
    """S3 frozen (SIGSTOP: connections hang) for ``seconds`` while a job reaches its
    download; *resume* is from S3's return to the job stored."""
    stack.start_worker(name="worker")
    producer = stack.producer()
    stack.s3.pause()
    t0 = time.time()
    try:
        [job_id] = enqueue(producer, 1, prompt="bench")
        _await(lambda: producer.status(job_id).state is JobState.DOWNLOADING, "downloading", 60)
        time.sleep(max(0.0, t0 + seconds - time.time()))
    finally:
        stack.s3.resume()
    back = time.time()
    stored = _await(lambda: producer.status(job_id).state is JobState.STORED, "stored")
    return {"detect_s": float("nan"), "resume_s": stored - back, "creates": 1.0}


def credits_gone(stack: Stack, *, seconds: float = 30.0) -> dict[str, float]:
    """No credits (402) for ``seconds``: the quota breaker trips; *detect* is from the
    credits' return to the probe that closes it, *resume* to the waiting job stored."""
    stack.start_worker(name="worker")
    producer = stack.producer()
    stack.emulator.set_credits(0)
    t0 = time.time()
    [job_id] = enqueue(producer, 1, prompt="bench")
    _await(lambda: bool(producer.status(job_id).waiting_reason), "waiting for credits", 60)
    time.sleep(max(0.0, t0 + seconds - time.time()))
    stack.emulator.set_credits(None)
    back = time.time()
    stored = _await(lambda: producer.status(job_id).state is JobState.STORED, "stored")
    closed = _logged_at(stack, _CLOSED) or float("nan")
    return {"detect_s": closed - back, "resume_s": stored - back, "creates": 1.0}


SCENARIOS: dict[str, Callable[[Stack], dict[str, float]]] = {
    "sigkill-create": lambda s: mid_create(s, freeze_s=None),
    "sigkill-create-same-name": lambda s: mid_create(s, freeze_s=None, same_name=True),
    "sigkill-child-create": lambda s: mid_create(s, freeze_s=None, child=True),
    "sigstop-create-30s": lambda s: mid_create(s, freeze_s=30.0),
    "sigkill-poll": mid_query,
    "redis-restart": redis_restart,
    "s3-frozen-30s": s3_outage,
    "credits-gone-30s": credits_gone,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--only", default=",".join(SCENARIOS))
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="nbq-recovery-"))
    emulator = EmulatorServer(log_dir=base)
    s3 = S3Server(dir=base / "s3")
    (base / "s3").mkdir()
    emulator.start()
    s3.start()
    try:
        for name in args.only.split(","):
            work = base / name
            work.mkdir()
            server = RedisServer(dir=work)
            server.start()
            emulator.reset()
            stack = Stack(redis=server, s3=s3, emulator=emulator, dir=work)
            stack.overrides.update({**DEFAULTS, "NBQ_WORKER_LEASE_S": str(args.lease)})
            try:
                result = SCENARIOS[name](stack)
                unacked = len(server.client().hkeys("unacked"))
            finally:
                stack.stop_workers()
                server.stop()
            print(
                f"{name:20} detect {result['detect_s']:6.1f} s  resume {result['resume_s']:6.1f}"
                f" s  creates/job {result['creates']:.0f}  unacked left {unacked}",
                flush=True,
            )
    finally:
        s3.stop()
        emulator.stop()


if __name__ == "__main__":
    main()
