"""Helpers for storage tests: a store pointed at a test server, image bytes, streams."""

from __future__ import annotations

import io
from collections.abc import Iterator

from PIL import Image

from nanobanana_queue.workers.settings import load_settings
from nanobanana_queue.workers.storage.s3 import ObjectStore
from tests.support.s3_server import S3Server


def store_for(server: S3Server, **kwargs: float) -> ObjectStore:
    settings = load_settings(
        s3_endpoint=server.endpoint,
        s3_access_key=server.access_key,
        s3_secret_key=server.secret_key,
        s3_bucket=server.bucket,
        s3_secure=False,
        s3_region=server.region,
    )
    return ObjectStore.from_settings(settings, **kwargs)  # type: ignore[arg-type]


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 120, 30)).save(out, format=fmt)
    return out.getvalue()


def chunked(data: bytes, chunk_bytes: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), chunk_bytes):
        yield data[start : start + chunk_bytes]
