"""Streaming an image into S3 holds about one part in memory, whatever the file size.

Measured with tracemalloc (Python allocations of this process), which is deterministic,
rather than RSS, which the allocator and other threads make noisy. The 50 MB stream is
generated lazily from one reused block, so the producer side holds almost nothing.
"""

from __future__ import annotations

import gc
import hashlib
import os
import tracemalloc
from collections.abc import Iterator

import pytest

from nanobanana_queue.workers.storage.manifest import object_metadata
from nanobanana_queue.workers.storage.s3 import PART_SIZE_BYTES, ObjectStore
from tests.workers.storage.helpers import image_bytes

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1024 * 1024
BLOCK = os.urandom(256 * 1024)


def generated_image(total_bytes: int) -> Iterator[bytes]:
    """A PNG header followed by filler, in 256 KiB chunks, never materialised whole."""
    head = image_bytes("PNG")
    yield head
    sent = len(head)
    while sent < total_bytes:
        block = BLOCK[: total_bytes - sent]
        yield block
        sent += len(block)


def expected_sha256(total_bytes: int) -> str:
    digest = hashlib.sha256()
    for chunk in generated_image(total_bytes):
        digest.update(chunk)
    return digest.hexdigest()


def peak_bytes_while_storing(store: ObjectStore, key_stem: str, total_bytes: int) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        stored = store.put_image_stream(
            key_stem,
            generated_image(total_bytes),
            max_bytes=64 * MIB,
            metadata=object_metadata(job_id="j", evolink_task_id="t", prompt="p"),
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stored.size == total_bytes
    assert stored.sha256 == expected_sha256(total_bytes)
    return peak


def test_memory_stays_flat_from_1_mb_to_50_mb(store, prefix):
    small_peak = peak_bytes_while_storing(store, f"{prefix}/small", 1 * MIB)
    large_peak = peak_bytes_while_storing(store, f"{prefix}/large", 50 * MIB)

    print(
        f"tracemalloc peak: 1 MiB -> {small_peak / MIB:.1f} MiB, "
        f"50 MiB -> {large_peak / MIB:.1f} MiB"
    )
    assert large_peak - small_peak < 20 * MIB
    assert large_peak < 5 * PART_SIZE_BYTES  # a few copies of one part, not the file
    assert store.stat(f"{prefix}/large.png")["size"] == 50 * MIB
