"""Pipeline errors outside the API client: result links, images and storage.

::

    PipelineError                   base; ``reason`` is recorded on the job, ``retryable`` decides
    ├── UnsafeUrlError              a URL the guard refuses (scheme, host, private address)
    ├── ResultExpiredError          a result link answered 403/404/410: it expired
    ├── ResultTooLargeError         a result over NBQ_MAX_RESULT_BYTES
    ├── NotAnImageError             a result whose bytes are not PNG/JPEG/WebP/GIF
    ├── ResultRedirectLoopError     a result link that loops or redirects too often (permanent)
    ├── ResultFetchError            transient trouble fetching a result (5xx, timeout)  [retryable]
    └── StorageError                S3/MinIO unreachable or failing                    [retryable]

Boundary modules (result fetcher, object store) translate httpx/minio/urllib3 errors into
these with ``raise ... from exc``; Celery tasks never import those libraries.
"""

from __future__ import annotations

from typing import ClassVar


class PipelineError(Exception):
    reason: ClassVar[str] = "pipeline_error"
    retryable: ClassVar[bool] = False


class UnsafeUrlError(PipelineError, ValueError):
    """Refused before any byte is fetched; the message names the URL and why."""

    reason = "unsafe_result_url"


class ResultExpiredError(PipelineError):
    reason = "result_expired"


class ResultTooLargeError(PipelineError):
    reason = "result_too_large"


class NotAnImageError(PipelineError):
    reason = "not_an_image"


class ResultRedirectLoopError(PipelineError):
    """A link that comes back to a URL it already visited, or exceeds
    NBQ_DOWNLOAD_MAX_REDIRECTS: retrying the same link cannot end differently."""

    reason = "redirect_loop"


class ResultFetchError(PipelineError):
    reason = "download_failed"
    retryable = True


class StorageError(PipelineError):
    reason = "storage_unavailable"
    retryable = True
