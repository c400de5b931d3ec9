"""Object storage for result images: sniffing, the S3/MinIO boundary, keys and manifests."""

from workers.storage.manifest import (
    MANIFEST_SCHEMA_VERSION,
    build_manifest,
    manifest_key,
    object_key_stem,
    object_metadata,
    prompt_sha256,
)
from workers.storage.s3 import PART_SIZE_BYTES, ObjectStore
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
