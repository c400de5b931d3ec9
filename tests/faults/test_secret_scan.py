"""No secret leaks: a full run with failures, then every place a secret could land is searched.

Each secret setting gets a distinctive value (the S3 server of this test accepts any
credentials, so the S3 keys are distinctive too). The run has a quota burst (402s), a
failed task, a stored job and callbacks on. Afterwards, and once mid-run while messages
wait in the broker, none of the values (nor their base64 form) may appear in: worker
logs, any Redis key or value (hashes, lists, sets, sorted sets, strings, streams; Celery
message bodies decoded), S3 objects and their metadata, or errors recorded on jobs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import pytest
import redis

from nanobanana_queue.workers.jobs.state import JobState
from tests.faults.helpers import enqueue
from tests.support.emulator_server import EmulatorServer
from tests.support.procs import free_port, wait_until
from tests.support.stack import Stack

pytestmark = [pytest.mark.faults, pytest.mark.integration]

API_KEY = "sk-evolink-SCAN-5b7f0c2e91d4"
S3_ACCESS_KEY = "AKIASCANACCESS7Q2W"
S3_SECRET_KEY = "s3-secret-SCAN-9d8c7b6a5f4e"
FLOWER_PASSWORD = "flower-pass-SCAN-31a4"
INGRESS_TOKEN = "ingress-token-SCAN-8e2d"
CALLBACK_SECRET = "callback-secret-SCAN-44f0"
SECRETS = {
    "NBQ_EVOLINK_API_KEY": API_KEY,
    "NBQ_S3_ACCESS_KEY": S3_ACCESS_KEY,
    "NBQ_S3_SECRET_KEY": S3_SECRET_KEY,
    "NBQ_FLOWER_BASIC_AUTH": f"admin:{FLOWER_PASSWORD}",
    "NBQ_INGRESS_TOKENS": f"scanner:{INGRESS_TOKEN}",
    "NBQ_CALLBACK_SECRET": CALLBACK_SECRET,
}
#: The distinctive part of each value: what must never appear anywhere.
NEEDLES = {
    name: value.split(":", 1)[-1] if ":" in value else value for name, value in SECRETS.items()
}


def _forms(needle: str) -> list[bytes]:
    """The value, and its base64 form at each of the three alignments."""
    raw = needle.encode()
    forms = [raw]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw)[4 * shift // 3 + 2 : -4]
        if len(encoded) >= 8:
            forms.append(encoded)
    return forms


def _find(blob: bytes, where: str) -> list[str]:
    hits = []
    for name, needle in NEEDLES.items():
        if any(form in blob for form in _forms(needle)):
            hits.append(f"{name} in {where}")
    return hits


def _decoded(value: bytes) -> Iterator[bytes]:
    """A value and, for a kombu message, its base64 body decoded."""
    yield value
    try:
        message = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return
    candidates = message if isinstance(message, list) else [message]
    for item in candidates:
        if isinstance(item, dict) and isinstance(item.get("body"), str):
            try:
                yield b"kombu body: " + base64.b64decode(item["body"])
            except ValueError:
                yield item["body"].encode()


def _raw(reply: bytes | str) -> bytes:
    """A reply as bytes (the client does not decode replies; a str is encoded back)."""
    return reply if isinstance(reply, bytes) else reply.encode()


def _redis_values(client: redis.Redis) -> Iterator[tuple[str, bytes]]:
    for key in client.scan_iter(count=500):
        name = _raw(key).decode(errors="replace")
        yield f"redis key name {name}", _raw(key)
        kind = _raw(client.type(key)).decode()
        values: list[bytes | str] = []
        if kind == "string":
            values = [client.get(key) or b""]
        elif kind == "hash":
            values = [b for pair in client.hgetall(key).items() for b in pair]
        elif kind == "list":
            values = list(client.lrange(key, 0, -1))
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            # members only (no scores), so every item is one member
            values = [m for m in client.zrange(key, 0, -1) if isinstance(m, bytes | str)]
        elif kind == "stream":
            values = [
                b
                for _, fields in client.xrange(key) or []
                for pair in (fields or {}).items()
                for b in pair
            ]
        for value in values:
            for blob in _decoded(_raw(value)):
                yield f"redis {kind} {name}", blob


def _scan_redis(stack: Stack) -> tuple[list[str], int]:
    """Hits, and how many Celery message bodies were decoded and searched."""
    hits: list[str] = []
    bodies = 0
    for where, blob in _redis_values(stack.redis.client()):
        hits += _find(blob, where)
        bodies += blob.startswith(b"kombu body: ")
    return hits, bodies


def _scan_s3(stack: Stack) -> list[str]:
    client = stack.s3.minio()
    hits: list[str] = []
    for key in stack.s3.keys(prefix=""):
        hits += _find(client.get_object(stack.s3.bucket, key).read(), f"s3 object {key}")
        meta = client.stat_object(stack.s3.bucket, key).metadata or {}
        hits += _find(json.dumps(dict(meta.items())).encode(), f"s3 metadata {key}")
    return hits


@pytest.fixture
def secret_stack(
    own_s3_stack: Callable[..., Stack], emulator_factory: Callable[..., EmulatorServer]
) -> Stack:
    emulator = emulator_factory("--api-key", API_KEY)
    stack = own_s3_stack(emulator=emulator, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY)
    stack.overrides.update(
        {
            **SECRETS,
            # Callbacks on (to a closed loopback port): the secret is in use, tokens derived
            "NBQ_PUBLIC_CALLBACK_URL": f"http://127.0.0.1:{free_port()}",
            "NBQ_CALLBACK_FIRST_POLL_FACTOR": "1",
        }
    )
    return stack


def test_no_secret_appears_in_logs_redis_messages_objects_or_job_errors(
    secret_stack: Stack,
) -> None:
    stack = secret_stack
    assert stack.env()["NBQ_EVOLINK_API_KEY"] == API_KEY
    # Given no credits at first (a quota burst), one task that fails, and good jobs
    stack.emulator.set_credits(0)
    stack.emulator.add_fault(
        endpoint="create", action="fail_task", code="content_policy_violation", match="forbidden"
    )
    stack.start_worker()
    producer = stack.producer()
    failing = producer.enqueue({"prompt": "forbidden scene", "quality": "1K"}).job_id
    good = enqueue(producer, 3, prompt="scan")
    job_ids = [failing, *good]
    wait_until(
        lambda: stack.emulator.stats()["creates_rejected"].get("402", 0) >= 2,
        timeout_s=30,
        what="a 402 burst",
    )
    # Mid-run: messages wait in the broker while the quota breaker is open (the 402'd
    # submits re-send themselves with a countdown a moment after the 402 is counted)
    mid_run: list[str] = []

    def scanned_a_waiting_message() -> bool:
        hits, bodies = _scan_redis(stack)
        mid_run[:] = hits
        return bodies >= 1  # the scan did read waiting messages

    wait_until(scanned_a_waiting_message, timeout_s=30, what="a message waiting in the broker")
    stack.emulator.set_credits(None)
    records = stack.wait_all(producer, job_ids)
    assert records[failing].state is JobState.FAILED
    assert all(records[j].state is JobState.STORED for j in good), records
    # Then no secret anywhere
    hits = list(mid_run)
    hits += _find(stack.worker_logs().encode(), "worker logs")
    hits += _scan_redis(stack)[0]
    hits += _scan_s3(stack)
    for job_id, record in records.items():
        hits += _find(record.model_dump_json().encode(), f"job record {job_id}")
    assert not hits, sorted(set(hits))
    # And the scan itself would see a leak (the needles are searchable where they'd land)
    assert _find(json.dumps({"k": S3_SECRET_KEY}).encode(), "probe")
    assert _find(base64.b64encode(f"x{API_KEY}".encode()), "probe")
