"""ObjectStore against a real S3 API (moto's server in a subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator

import httpx
import pytest
from minio.datatypes import Upload

from nanobanana_queue.workers.errors import NotAnImageError, ResultFetchError, ResultTooLargeError
from nanobanana_queue.workers.settings import ConfigError, load_settings
from nanobanana_queue.workers.storage.manifest import (
    object_key_stem,
    object_metadata,
    prompt_sha256,
)
from nanobanana_queue.workers.storage.s3 import PART_SIZE_BYTES, ObjectStore, parse_endpoint
from tests.support.s3_server import S3Server
from tests.workers.storage.helpers import chunked, image_bytes

pytestmark = pytest.mark.integration

META = object_metadata(job_id="job-1", evolink_task_id="task-abc", prompt="a cat")


def pending_uploads(server: S3Server) -> list[Upload]:
    """Multipart uploads started but neither completed nor aborted."""
    result = server.minio()._list_multipart_uploads(server.bucket)
    return list(result.uploads)


def test_pillow_png_round_trips_with_matching_sha256_and_size(store, prefix, tmp_path):
    data = image_bytes("PNG", (300, 200))

    stored = store.put_image_stream(
        object_key_stem(prefix, "job-1", 0),
        chunked(data, 777),
        max_bytes=10_000_000,
        metadata=META,
    )

    assert stored.key == f"{prefix}/job-1/0.png"
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert stored.size == len(data)
    assert stored.content_type == "image/png"
    assert b"".join(store.iter_object(stored.key)) == data
    store.get_object_to(stored.key, tmp_path / "out.png")
    assert (tmp_path / "out.png").read_bytes() == data
    assert list(tmp_path.iterdir()) == [tmp_path / "out.png"]


def test_content_type_comes_from_the_bytes_not_from_what_the_server_claimed(store, prefix):
    # Given a result link that answered "Content-Type: image/png" for a JPEG body
    claimed_content_type, body = "image/png", image_bytes("JPEG")

    stored = store.put_image_stream(
        f"{prefix}/0", chunked(body), max_bytes=10_000_000, metadata=META, source_index=2
    )

    assert claimed_content_type != stored.content_type
    assert stored.key == f"{prefix}/0.jpg"
    assert stored.content_type == "image/jpeg"
    assert stored.source_index == 2
    assert store.stat(stored.key)["content_type"] == "image/jpeg"


@pytest.mark.parametrize(("fmt", "ext"), [("WEBP", "webp"), ("GIF", "gif")])
def test_webp_and_gif_get_their_own_extension(store, prefix, fmt, ext):
    stored = store.put_image_stream(
        f"{prefix}/0", chunked(image_bytes(fmt), 5), max_bytes=10_000_000, metadata=META
    )
    assert stored.key == f"{prefix}/0.{ext}"


def test_metadata_holds_sha256_size_job_task_and_prompt_hash(store, prefix):
    prompt = "un chat sur la lune, très détaillé 🐱" * 50  # long and non-ASCII
    metadata = object_metadata(job_id="job-7", evolink_task_id="task-xyz", prompt=prompt)
    data = image_bytes("PNG")

    stored = store.put_image_stream(
        f"{prefix}/0", chunked(data), max_bytes=10**7, metadata=metadata
    )

    info = store.stat(stored.key)
    assert info["size"] == len(data)
    assert info["metadata"] == {
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": str(len(data)),
        "job-id": "job-7",
        "evolink-task-id": "task-xyz",
        "prompt-sha256": prompt_sha256(prompt),
    }


@pytest.mark.parametrize(
    "body",
    [b"<!DOCTYPE html><html><body>Access denied</body></html>", b"", b"\x89PN"],
    ids=["html", "empty", "truncated"],
)
def test_non_image_is_refused_before_anything_is_stored(store, prefix, body):
    with pytest.raises(NotAnImageError):
        store.put_image_stream(f"{prefix}/0", chunked(body, 3), max_bytes=10**7, metadata=META)

    assert store.list_keys(prefix) == []


def test_oversize_result_in_one_part_is_refused_with_nothing_stored(store, prefix):
    data = image_bytes("PNG") + os.urandom(5000)

    with pytest.raises(ResultTooLargeError):
        store.put_image_stream(f"{prefix}/0", chunked(data), max_bytes=len(data) - 1, metadata=META)

    assert store.list_keys(prefix) == []


def test_oversize_multipart_upload_is_aborted_with_nothing_stored(store, prefix, session_s3):
    # Given a stream past two full parts, so a multipart upload is under way when it trips
    def stream() -> Iterator[bytes]:
        yield image_bytes("PNG")
        block = os.urandom(256 * 1024)
        while True:
            yield block

    with pytest.raises(ResultTooLargeError):
        store.put_image_stream(
            f"{prefix}/0", stream(), max_bytes=2 * PART_SIZE_BYTES + 10, metadata=META
        )

    assert store.list_keys(prefix) == []
    assert [u for u in pending_uploads(session_s3) if u.object_name.startswith(prefix)] == []


def test_the_fetchers_own_error_passes_through_unchanged(store, prefix):
    def stream() -> Iterator[bytes]:
        yield image_bytes("PNG")
        raise ResultFetchError("connection reset by the result host")

    with pytest.raises(ResultFetchError, match="connection reset"):
        store.put_image_stream(f"{prefix}/0", stream(), max_bytes=10**7, metadata=META)

    assert store.list_keys(prefix) == []


def test_metadata_that_cannot_travel_as_a_header_is_refused(store, prefix):
    with pytest.raises(ValueError, match="ASCII"):
        store.put_image_stream(
            f"{prefix}/0", chunked(image_bytes("PNG")), max_bytes=10**7, metadata={"prompt": "très"}
        )
    with pytest.raises(ValueError, match="reserved"):
        store.put_image_stream(
            f"{prefix}/0",
            chunked(image_bytes("PNG")),
            max_bytes=10**7,
            metadata={"sha256": "forged"},
        )


def test_presigned_url_downloads_with_plain_httpx(store, prefix):
    data = image_bytes("PNG")
    stored = store.put_image_stream(f"{prefix}/0", chunked(data), max_bytes=10**7, metadata=META)

    url = store.presigned_get_url(stored.key, expiry_s=300)
    response = httpx.get(url)

    assert response.status_code == 200
    assert response.content == data
    assert "X-Amz-Signature=" in url


def test_unsigned_get_is_refused_because_the_bucket_is_private(store, prefix, session_s3):
    stored = store.put_image_stream(
        f"{prefix}/0", chunked(image_bytes("PNG")), max_bytes=10**7, metadata=META
    )
    assert httpx.get(f"{session_s3.url}/{session_s3.bucket}/{stored.key}").status_code == 403


def test_put_json_stores_application_json_and_lists_under_its_prefix(store, prefix):
    store.put_json(f"{prefix}/manifest.json", {"job_id": "j", "prompt": "ünïcode"})
    store.put_image_stream(
        f"{prefix}/0", chunked(image_bytes("GIF")), max_bytes=10**7, metadata=META
    )

    assert json.loads(b"".join(store.iter_object(f"{prefix}/manifest.json"))) == {
        "job_id": "j",
        "prompt": "ünïcode",
    }
    assert store.stat(f"{prefix}/manifest.json")["content_type"] == "application/json"
    assert store.list_keys(prefix) == [f"{prefix}/0.gif", f"{prefix}/manifest.json"]
    assert store.exists(f"{prefix}/0.gif")
    assert not store.exists(f"{prefix}/1.gif")


def test_ensure_bucket_creates_a_private_bucket_once(session_s3):
    store = ObjectStore(session_s3.minio(), "nbq-fresh-bucket")

    store.ensure_bucket()
    store.ensure_bucket()

    assert store.ping()
    with pytest.raises(Exception, match="NoSuchBucketPolicy"):
        session_s3.minio().get_bucket_policy("nbq-fresh-bucket")


def test_ping_is_false_for_a_missing_bucket(session_s3):
    assert not ObjectStore(session_s3.minio(), "nbq-no-such-bucket").ping()


@pytest.mark.parametrize(
    ("endpoint", "secure", "expected"),
    [
        ("127.0.0.1:9000", False, ("127.0.0.1:9000", False)),
        ("minio:9000", True, ("minio:9000", True)),
        ("http://127.0.0.1:9000", True, ("127.0.0.1:9000", False)),
        ("https://s3.example.com", False, ("s3.example.com", True)),
        ("https://s3.example.com/", False, ("s3.example.com", True)),
    ],
)
def test_endpoint_accepts_host_port_and_url_forms(endpoint, secure, expected):
    assert parse_endpoint(endpoint, default_secure=secure) == expected


@pytest.mark.parametrize(
    "endpoint", ["ftp://host:21", "http://host:9000/bucket", "http://user:pw@host:9000"]
)
def test_endpoint_with_path_or_credentials_is_a_config_error_that_does_not_echo_it(endpoint):
    with pytest.raises(ConfigError) as caught:
        parse_endpoint(endpoint, default_secure=False)
    assert "pw" not in str(caught.value)


def test_from_settings_accepts_an_http_url_endpoint(session_s3):
    settings = load_settings(
        s3_endpoint=session_s3.url,
        s3_access_key=session_s3.access_key,
        s3_secret_key=session_s3.secret_key,
        s3_bucket=session_s3.bucket,
    )
    assert ObjectStore.from_settings(settings).ping()


def test_from_settings_without_credentials_names_the_missing_variable(monkeypatch):
    monkeypatch.delenv("NBQ_S3_ACCESS_KEY", raising=False)
    monkeypatch.delenv("NBQ_S3_ACCESS_KEY_FILE", raising=False)
    with pytest.raises(ConfigError, match="NBQ_S3_ACCESS_KEY"):
        ObjectStore.from_settings(load_settings(s3_access_key=None))


def test_server_helper_env_points_settings_at_the_server(session_s3, monkeypatch):
    for name, value in session_s3.env().items():
        monkeypatch.setenv(name, value)
    store = ObjectStore.from_settings(load_settings())
    assert store.bucket == session_s3.bucket
    assert store.ping()
