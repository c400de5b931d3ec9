"""Checks every fault scenario ends with: nothing lost, nothing paid twice, images intact."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Iterable
from typing import Any

from minio.error import S3Error

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.workers.jobs.record import JobRecord
from nanobanana_queue.workers.jobs.state import JobState
from tests.support.procs import wait_until
from tests.support.s3_server import S3Server
from tests.support.stack import Stack

#: A generous bound for a scenario's jobs to end; far below the 600 s visibility timeout.
END_TIMEOUT_S = 120.0
#: For a worker killed mid-create: its job is re-driven once the claim is older than the
#: submit time limit, so the scenario waits 12 s for it, not the default 90 s. Its soft
#: limit (8 s) still outlasts one create call (connect 1 s + the stack's read timeout 5 s).
SHORT_SUBMIT_LIMIT = {"NBQ_SUBMIT_TIME_LIMIT_S": "12", "NBQ_HTTP_CONNECT_TIMEOUT_S": "1"}


def enqueue(producer: Producer, count: int, *, prompt: str = "fault test") -> list[str]:
    """``count`` small jobs whose prompts contain ``prompt`` (fault rules match on it)."""
    return [
        producer.enqueue({"prompt": f"{prompt} {i}", "quality": "1K"}).job_id for i in range(count)
    ]


def kill_hard(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker's whole process group: no shutdown, no acks, no cleanup."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait(timeout=10)


def rule_hits(stack: Stack, rule_id: str) -> int:
    return next(int(r["hits"]) for r in stack.emulator.faults() if r["id"] == rule_id)


def wait_for_hits(
    stack: Stack, rule: dict[str, Any], hits: int = 1, timeout_s: float = 30.0
) -> None:
    wait_until(
        lambda: rule_hits(stack, str(rule["id"])) >= hits,
        timeout_s=timeout_s,
        interval_s=0.05,
        what=f"fault {rule['action']} on {rule['endpoint']} to fire",
    )


def wait_for_state(
    producer: Producer, job_ids: Iterable[str], state: JobState, timeout_s: float = 30.0
) -> None:
    ids = list(job_ids)
    wait_until(
        lambda: any(producer.status(j).state is state for j in ids),
        timeout_s=timeout_s,
        what=f"a job in {state.value}",
    )


def assert_nothing_lost(
    records: dict[str, JobRecord], *, allowed: Iterable[JobState] = (JobState.STORED,)
) -> None:
    """Every job ended in an allowed state; a failed one always says why."""
    allowed_states = set(allowed)
    wrong = {
        job_id: (r.state.value, r.error)
        for job_id, r in records.items()
        if r.state not in allowed_states
    }
    assert not wrong, f"jobs not in {sorted(s.value for s in allowed_states)}: {wrong}"
    for record in records.values():
        if record.state is JobState.FAILED:
            assert record.error is not None and record.error.code and record.error.message


def creates_per_job(stack: Stack, job_ids: Iterable[str]) -> dict[str, int]:
    """Paid creates per job, from the emulator (keys are ``nbq-<job_id>-<round>``)."""
    by_key: dict[str, int] = stack.emulator.stats()["creates_by_idempotency_key"]
    return {
        job_id: sum(n for key, n in by_key.items() if key.startswith(f"nbq-{job_id}-"))
        for job_id in job_ids
    }


def assert_one_create_each(stack: Stack, job_ids: Iterable[str]) -> None:
    """Exactly one paid API task per job, and no idempotency key ever created twice."""
    ids = list(job_ids)
    stats = stack.emulator.stats()
    assert stats["duplicate_idempotency_keys"] == []
    per_job = creates_per_job(stack, ids)
    assert per_job == dict.fromkeys(ids, 1), per_job
    assert stats["creates_accepted"] == len(ids)


def assert_images_intact(stack: Stack, records: dict[str, JobRecord]) -> None:
    """Every stored object matches the record and the manifest (sha256 of the bytes)."""
    stored = {j: r for j, r in records.items() if r.state is JobState.STORED}
    wrong = image_mismatches(stack.s3, stored)
    assert not wrong, wrong


def image_mismatches(s3: S3Server, records: dict[str, JobRecord]) -> dict[str, str]:
    """Jobs whose S3 objects disagree with their record or manifest, with what is wrong:
    a stored job's manifest, object count, bytes, size or sha256; any object under a
    failed job's prefix (a failed job leaves none, partial or whole)."""
    client = s3.minio()
    bucket = s3.bucket
    wrong: dict[str, str] = {}
    for job_id, record in records.items():
        if record.state is JobState.FAILED:
            if s3.keys(f"images/{job_id}/"):
                wrong[job_id] = "objects left by a failed job"
            continue
        if record.state is not JobState.STORED:
            continue
        try:
            manifest = json.loads(
                client.get_object(bucket, f"images/{job_id}/manifest.json").read()
            )
        except S3Error as exc:
            wrong[job_id] = f"manifest: {exc.code}"
            continue
        by_key = {o["key"]: o for o in manifest["objects"]}
        if not record.objects or len(by_key) != len(record.objects):
            wrong[job_id] = "object count differs from the manifest"
            continue
        for obj in record.objects:
            try:
                data = client.get_object(bucket, obj.key).read()
            except S3Error as exc:
                wrong[job_id] = f"{obj.key}: {exc.code}"
                break
            digest = hashlib.sha256(data).hexdigest()
            if not digest == obj.sha256 == by_key.get(obj.key, {}).get("sha256"):
                wrong[job_id] = f"{obj.key}: sha256 differs"
                break
            if len(data) != obj.size:
                wrong[job_id] = f"{obj.key}: size differs"
                break
    return wrong


def assert_nothing_in_bucket(stack: Stack, job_id: str) -> None:
    """A failed job leaves no object, partial or whole, under its prefix."""
    assert stack.s3.keys(f"images/{job_id}/") == []


def task_outcomes(stack: Stack) -> Counter[str]:
    """How often each stage outcome label was returned (Celery logs every task's result)."""
    return Counter(re.findall(r"succeeded in [0-9.]+s: '(\w+)'", stack.worker_logs()))
