"""The object store boundary: S3/MinIO through ``minio.Minio``, errors translated here.

Nothing outside this module imports minio or urllib3. Every failure of the store itself
(unreachable, timing out, answering 5xx or an S3 error code) leaves as ``StorageError``
(retryable) with ``raise ... from exc``; messages name the operation and key, never a
credential. The client gets short timeouts and two retries so an outage surfaces within
seconds and the Celery task's own backoff takes over.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

try:
    import urllib3
    from minio import Minio
    from minio.commonconfig import REPLACE, CopySource
    from minio.error import MinioException, S3Error
except ImportError as exc:  # a slim install: one clear line, not a traceback
    from nanobanana_queue.workers.extras import extra_missing, missing_modules

    missing = missing_modules("minio", "urllib3") or [str(exc.name)]
    raise extra_missing("s3", missing, what="S3 storage (results)") from exc

from nanobanana_queue.workers.errors import (
    NotAnImageError,
    PipelineError,
    ResultTooLargeError,
    StorageError,
)
from nanobanana_queue.workers.jobs.record import StoredObject
from nanobanana_queue.workers.settings import ConfigError, Settings
from nanobanana_queue.workers.storage.sniff import MIN_SNIFF_BYTES, ImageType, sniff_image

__all__ = ["PART_SIZE_BYTES", "ObjectStore"]

#: Multipart part size; the upload holds about one part in memory (S3's minimum is 5 MiB).
PART_SIZE_BYTES = 5 * 1024 * 1024
#: Chunk size when streaming an object back out.
READ_CHUNK_BYTES = 256 * 1024
CONNECT_TIMEOUT_S = 3.0
#: Long enough for the store to acknowledge one part, short enough to notice a hung store.
READ_TIMEOUT_S = 10.0
#: urllib3 retries per request (connection errors and 500/502/503/504), 0.2 s backoff base.
#: A refused connection fails in well under a second; a hung store after 2 x READ_TIMEOUT_S
#: (one read retry, so a stale pooled connection is not fatal).
REQUEST_RETRIES = 2
#: Errors of the store itself; anything else (a bug, a local disk error) is not translated.
_STORE_ERRORS: tuple[type[Exception], ...] = (
    MinioException,
    urllib3.exceptions.HTTPError,
    ConnectionError,
    TimeoutError,
)
_META_PREFIX = "x-amz-meta-"


class ObjectStore:
    """One bucket. Keys are full object names; the caller chooses them (see ``manifest``)."""

    def __init__(self, client: Minio, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        retries: int = REQUEST_RETRIES,
    ) -> ObjectStore:
        """Build the client from ``NBQ_S3_*``.

        ``NBQ_S3_ENDPOINT`` may be ``host:port`` (TLS from ``NBQ_S3_SECURE``) or
        ``http(s)://host:port``, where the scheme wins over ``NBQ_S3_SECURE``.
        """
        settings.require("s3_access_key", "s3_secret_key")
        assert settings.s3_access_key is not None and settings.s3_secret_key is not None
        endpoint, secure = parse_endpoint(settings.s3_endpoint, default_secure=settings.s3_secure)
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s),
            retries=urllib3.Retry(
                total=retries,
                read=min(retries, 1),
                backoff_factor=0.2,
                status_forcelist=(500, 502, 503, 504),
            ),
            maxsize=10,
        )
        client = Minio(
            endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            secure=secure,
            region=settings.s3_region,
            http_client=http,
        )
        return cls(client, settings.s3_bucket)

    # --- bucket ------------------------------------------------------------------------

    def ensure_bucket(self) -> None:
        """Create the bucket if missing. It stays private: no policy is ever attached."""
        with self._translate("create bucket"):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as exc:
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    def ping(self) -> bool:
        """Readiness: True when the store answers and the bucket exists; never raises."""
        try:
            with self._translate("ping"):
                return bool(self._client.bucket_exists(self.bucket))
        except StorageError:
            return False

    # --- writing -----------------------------------------------------------------------

    def put_image_stream(
        self,
        key_stem: str,
        chunks: Iterable[bytes],
        *,
        max_bytes: int,
        metadata: Mapping[str, str],
        source_index: int = 0,
        length: int | None = None,
    ) -> StoredObject:
        """Stream an image into ``{key_stem}.{ext}`` in constant memory (about one part).

        The first bytes are sniffed before anything is sent: a non-image raises
        ``NotAnImageError`` and stores nothing. The rest streams through a multipart
        upload; past ``max_bytes`` the upload is aborted (S3 keeps nothing of an aborted
        multipart upload) and ``ResultTooLargeError`` raised. Errors raised by ``chunks``
        itself (the fetcher's) pass through unchanged.

        Metadata: an image that fits in one part (5 MiB; most results) is read into that
        one bounded buffer and stored with a single PUT carrying ``sha256`` and ``size``.
        For larger ones S3 takes metadata with the upload's first request, but ``sha256``
        and ``size`` are only known after the last byte. Buffering the file (memory) or reading
        it twice (a second download) would both defeat streaming, so the object is first
        uploaded with the caller's metadata and the sniffed ``Content-Type``, then copied
        onto itself server-side with ``REPLACE`` metadata adding ``sha256`` and ``size``
        (conditional on the upload's ETag). No bytes pass through this process twice. If
        the copy fails, the object exists without ``sha256``; the error is a retryable
        ``StorageError`` and the retry overwrites the same key.
        """
        _check_metadata(metadata)
        source = iter(chunks)
        head = _read_head(source)
        image = sniff_image(head)
        if image is None:
            raise NotAnImageError(
                f"result {source_index} is not a PNG/JPEG/WebP/GIF image "
                f"(first bytes {head[:MIN_SNIFF_BYTES]!r})"
            )
        key = f"{key_stem}.{image.extension}"
        reader = _HashingReader(head, source, max_bytes=max_bytes)
        first_part = reader.read(PART_SIZE_BYTES + 1)  # too large / fetch errors pass through
        if len(first_part) <= PART_SIZE_BYTES:
            # The whole image fits in one part (most results do): checksum and size are
            # already known, so one PUT carries every piece of metadata — no copy request.
            return self._put_small(key, first_part, reader, image, metadata, source_index)
        upload = _PrefixedReader(first_part, reader)
        del first_part
        try:
            with self._translate("upload", key):
                written = self._client.put_object(
                    self.bucket,
                    key,
                    upload,  # type: ignore[arg-type]  # read() is all minio uses
                    # A known length (the link's Content-Length) lets minio read whole
                    # parts without its one-byte look-ahead copies: ~2 parts less memory.
                    length=length if length and length > PART_SIZE_BYTES else -1,
                    part_size=PART_SIZE_BYTES,
                    content_type=image.content_type,
                    metadata=dict(metadata),
                    num_parallel_uploads=1,  # parallel parts would each hold a buffer
                )
        except Exception:
            if reader.failure is None:
                raise
            # The stream's own error (too large, or the fetcher's), not the abort's.
            if isinstance(reader.failure, ResultTooLargeError):
                self._discard(key)
            raise reader.failure from None
        final_metadata = {**_checksummed(metadata, reader), "Content-Type": image.content_type}
        with self._translate("set metadata on", key):
            self._client.copy_object(
                self.bucket,
                key,
                CopySource(self.bucket, key, match_etag=written.etag),
                metadata=final_metadata,
                metadata_directive=REPLACE,
            )
        return _stored_object(key, reader, image, source_index)

    def _put_small(
        self,
        key: str,
        body: bytes,
        reader: _HashingReader,
        image: ImageType,
        metadata: Mapping[str, str],
        source_index: int,
    ) -> StoredObject:
        final_metadata = _checksummed(metadata, reader)
        with self._translate("upload", key):
            self._client.put_object(
                self.bucket,
                key,
                io.BytesIO(body),
                length=len(body),
                content_type=image.content_type,
                metadata=final_metadata,
            )
        return _stored_object(key, reader, image, source_index)

    def put_json(self, key: str, data: Any) -> None:
        """Store ``data`` as pretty, key-sorted JSON (``application/json``)."""
        body = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8")
        with self._translate("upload", key):
            self._client.put_object(
                self.bucket,
                key,
                io.BytesIO(body),
                length=len(body),
                content_type="application/json",
            )

    # --- reading -----------------------------------------------------------------------

    def iter_object(self, key: str, chunk_bytes: int = READ_CHUNK_BYTES) -> Iterator[bytes]:
        """The object's bytes in chunks; the connection is released when iteration ends.

        Like every read here, a missing key is a ``StorageError`` (``exists`` tells first).
        """
        with self._translate("download", key):
            response = self._client.get_object(self.bucket, key)
            try:
                yield from response.stream(chunk_bytes)
            finally:
                response.close()
                response.release_conn()

    def get_object_to(self, key: str, path: str | Path) -> None:
        """Download to ``path`` atomically (a ``.part`` file renamed at the end)."""
        target = Path(path)
        partial = target.with_name(target.name + ".part")
        try:
            with partial.open("wb") as out:
                for chunk in self.iter_object(key):
                    out.write(chunk)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)

    def stat(self, key: str) -> dict[str, Any]:
        """``{"size", "content_type", "etag", "metadata"}``; metadata keys without prefix."""
        with self._translate("stat", key):
            info = self._client.stat_object(self.bucket, key)
        metadata = {
            name.lower()[len(_META_PREFIX) :]: str(value)
            for name, value in (info.metadata or {}).items()
            if name.lower().startswith(_META_PREFIX)
        }
        return {
            "size": int(info.size or 0),
            "content_type": info.content_type,
            "etag": info.etag,
            "metadata": metadata,
        }

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists (lets a retried download skip finished work)."""
        try:
            with self._translate("stat", key):
                self._client.stat_object(self.bucket, key)
        except StorageError as exc:
            cause = exc.__cause__
            if isinstance(cause, S3Error) and cause.code in ("NoSuchKey", "NoSuchObject"):
                return False
            raise
        return True

    def get_json(self, key: str) -> Any | None:
        """The JSON document at ``key``, or ``None`` when there is none (other failures raise)."""
        if not self.exists(key):
            return None
        return json.loads(b"".join(self.iter_object(key)))

    def presigned_get_url(self, key: str, expiry_s: int) -> str:
        """A time-limited GET link for ``key`` (signed locally; the bucket stays private)."""
        with self._translate("presign", key):
            return str(
                self._client.presigned_get_object(
                    self.bucket, key, expires=timedelta(seconds=expiry_s)
                )
            )

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (recursive), sorted."""
        with self._translate("list", prefix):
            objects = self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            return sorted(str(o.object_name) for o in objects)

    # --- internals ---------------------------------------------------------------------

    def _discard(self, key: str) -> None:
        """Best-effort removal of whatever a failed upload may have left at ``key``."""
        try:
            with self._translate("remove", key):
                self._client.remove_object(self.bucket, key)
        except StorageError:
            pass  # the store is failing too; an aborted multipart upload stores nothing

    @contextmanager
    def _translate(self, operation: str, key: str = "") -> Iterator[None]:
        """Turn minio/urllib3/socket failures into ``StorageError`` naming op and key."""
        try:
            yield
        except PipelineError:
            raise
        except _STORE_ERRORS as exc:
            where = f"{self.bucket}/{key}" if key else self.bucket
            raise StorageError(f"S3 {operation} {where} failed: {_describe(exc)}") from exc


class _HashingReader:
    """File-like view of ``head`` + ``rest`` that hashes, counts and caps bytes as they pass.

    Holds at most one requested read plus one leftover source chunk. An exception raised
    here or by the source is kept in ``failure`` so the caller can re-raise it even when
    minio's abort of the multipart upload fails afterwards.
    """

    def __init__(self, head: bytes, rest: Iterator[bytes], *, max_bytes: int) -> None:
        self._pending = memoryview(head)
        self._rest = rest
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self.size = 0
        self.failure: BaseException | None = None

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def read(self, size: int = -1) -> bytes:
        try:
            return self._read(size)
        except BaseException as exc:
            self.failure = exc
            raise

    def _read(self, size: int) -> bytes:
        pieces: list[memoryview] = []  # views into source chunks: joined with one copy
        wanted = size if size >= 0 else None
        got = 0
        while wanted is None or got < wanted:
            if not self._pending:
                chunk = next(self._rest, None)
                if chunk is None:
                    break
                self._pending = memoryview(chunk)
                continue
            take = len(self._pending) if wanted is None else min(len(self._pending), wanted - got)
            piece = self._pending[:take]
            self._pending = self._pending[take:]
            self._account(piece)
            pieces.append(piece)
            got += take
        return b"".join(pieces)

    def _account(self, piece: memoryview) -> None:
        self.size += len(piece)
        if self.size > self._max_bytes:
            raise ResultTooLargeError(f"result is larger than {self._max_bytes} bytes")
        self._hash.update(piece)


class _PrefixedReader:
    """``prefix`` (already read, hashed and counted) followed by the rest of ``reader``."""

    def __init__(self, prefix: bytes, reader: _HashingReader) -> None:
        self._prefix: bytes | None = prefix
        self._reader = reader

    def read(self, size: int = -1) -> bytes:
        if self._prefix is not None:
            if size < 0 or size >= len(self._prefix):
                prefix, self._prefix = self._prefix, None
                more = self._reader.read(size - len(prefix)) if size > len(prefix) else b""
                return prefix + more if more else prefix
            piece, self._prefix = self._prefix[:size], self._prefix[size:]
            return piece
        return self._reader.read(size)


def _read_head(source: Iterator[bytes]) -> bytes:
    """Pull chunks until ``MIN_SNIFF_BYTES`` are buffered or the stream ends."""
    head = b""
    while len(head) < MIN_SNIFF_BYTES:
        chunk = next(source, None)
        if chunk is None:
            break
        head += chunk
    return head


def _check_metadata(metadata: Mapping[str, str]) -> None:
    """S3 metadata travels in HTTP headers: short ASCII only, and no reserved names."""
    for name, value in metadata.items():
        if name.lower() in ("sha256", "size", "content-type"):
            raise ValueError(f"metadata name {name!r} is reserved")
        if not (name.isascii() and value.isascii()) or len(value) > 1024:
            raise ValueError(f"metadata {name!r} must be ASCII and under 1 KiB")


def _describe(exc: BaseException) -> str:
    """A short cause: S3 error code, or the network failure. No headers, no credentials."""
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return f"{type(exc.reason).__name__} after retries: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def parse_endpoint(endpoint: str, *, default_secure: bool) -> tuple[str, bool]:
    """``host:port`` or ``http(s)://host:port`` → (``host:port``, secure)."""
    if "://" not in endpoint:
        return endpoint.strip().rstrip("/"), default_secure
    parts = urlsplit(endpoint.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("NBQ_S3_ENDPOINT: expected host:port or http(s)://host:port")
    if parts.path.strip("/") or parts.query or parts.username or parts.password:
        raise ConfigError("NBQ_S3_ENDPOINT: must not contain a path, query or credentials")
    return parts.netloc, parts.scheme == "https"


def _checksummed(
    metadata: Mapping[str, str], reader: _HashingReader
) -> dict[str, str | list[str] | tuple[str]]:
    """The caller's metadata plus what is known only after the last byte."""
    return {**metadata, "sha256": reader.sha256, "size": str(reader.size)}


def _stored_object(
    key: str, reader: _HashingReader, image: ImageType, source_index: int
) -> StoredObject:
    return StoredObject(
        key=key,
        sha256=reader.sha256,
        size=reader.size,
        content_type=image.content_type,
        source_index=source_index,
    )
