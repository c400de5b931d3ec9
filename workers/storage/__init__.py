"""Object storage for result images: sniffing, the S3/MinIO boundary, keys and manifests.

``ObjectStore`` (minio) loads on first use: a producer reading manifests' keys needs no
S3 client library (``pip install 'nanobanana-queue[s3]'`` brings it).
"""

from typing import Any

from nanobanana_queue.workers.storage.manifest import (
    MANIFEST_SCHEMA_VERSION,
    build_manifest,
    manifest_key,
    object_key_stem,
    object_metadata,
    prompt_sha256,
)
from nanobanana_queue.workers.storage.sniff import MIN_SNIFF_BYTES, ImageType, sniff_image

__all__ = [
    "MANIFEST_SCHEMA_VERSION",
    "MIN_SNIFF_BYTES",
    "PART_SIZE_BYTES",
    "ImageType",
    "ObjectStore",
    "build_manifest",
    "manifest_key",
    "object_key_stem",
    "object_metadata",
    "prompt_sha256",
    "sniff_image",
]


def __getattr__(name: str) -> Any:
    if name in ("ObjectStore", "PART_SIZE_BYTES"):
        from nanobanana_queue.workers.storage import s3

        return getattr(s3, name)
    raise AttributeError(f"module 'nanobanana_queue.workers.storage' has no attribute {name!r}")
