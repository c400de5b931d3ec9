"""Object storage for result images: sniffing, the S3/MinIO boundary, keys and manifests.

``ObjectStore`` (minio) loads on first use: a producer reading manifests' keys needs no
S3 client library (``pip install 'nanobanana-queue[s3]'`` brings it).
"""

from typing import Any

from workers.storage.manifest import (
    MANIFEST_SCHEMA_VERSION,
    build_manifest,
    manifest_key,
    object_key_stem,
    object_metadata,
    prompt_sha256,
)
from workers.storage.sniff import MIN_SNIFF_BYTES, ImageType, sniff_image

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
        from workers.storage import s3

        return getattr(s3, name)
    raise AttributeError(f"module 'workers.storage' has no attribute {name!r}")
