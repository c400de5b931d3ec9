"""S3 taken away mid-test: every call fails with StorageError, quickly and without secrets.

"Quickly" is checked structurally, never by the clock: the cause must be the refused
connection (or the configured read timeout), which the client's small retry count and
short timeouts turn into an error within seconds.
"""

from __future__ import annotations

import pytest
import urllib3

from nanobanana_queue.workers.errors import StorageError
from nanobanana_queue.workers.storage.manifest import object_metadata
from nanobanana_queue.workers.storage.s3 import REQUEST_RETRIES
from tests.support.s3_server import S3Server
from tests.workers.storage.helpers import chunked, image_bytes, store_for


@pytest.fixture
def s3_server(s3_process: S3Server) -> S3Server:
    """These tests stop, pause and restart S3: a server of their own each."""
    return s3_process


pytestmark = [pytest.mark.integration, pytest.mark.faults]

META = object_metadata(job_id="job-1", evolink_task_id="task-1", prompt="p")


def assert_store_error(exc: StorageError, server: S3Server) -> None:
    assert exc.retryable
    assert isinstance(exc.__cause__, urllib3.exceptions.HTTPError | ConnectionError)
    assert server.secret_key not in str(exc)
    assert server.access_key not in str(exc)


def test_every_operation_fails_with_storage_error_when_the_server_is_down(s3_server, tmp_path):
    # Given a working store
    store = store_for(s3_server)
    store.ensure_bucket()
    stored = store.put_image_stream(
        "k/0", chunked(image_bytes("PNG")), max_bytes=10**7, metadata=META
    )

    # When the server goes away
    s3_server.stop()

    # Then each call fails with a translated, retryable error naming the refused connection
    calls = {
        "put_image_stream": lambda: store.put_image_stream(
            "k/1", chunked(image_bytes("PNG")), max_bytes=10**7, metadata=META
        ),
        "put_json": lambda: store.put_json("k/manifest.json", {"a": 1}),
        "stat": lambda: store.stat(stored.key),
        "exists": lambda: store.exists(stored.key),
        "iter_object": lambda: list(store.iter_object(stored.key)),
        "get_object_to": lambda: store.get_object_to(stored.key, tmp_path / "x.png"),
        "list_keys": lambda: store.list_keys("k/"),
        "ensure_bucket": store.ensure_bucket,
    }
    for name, call in calls.items():
        with pytest.raises(StorageError) as caught:
            call()
        assert_store_error(caught.value, s3_server)
        assert "NewConnectionError" in str(caught.value) or "refused" in str(caught.value), name
    assert not store.ping()
    assert not (tmp_path / "x.png").exists()
    assert not (tmp_path / "x.png.part").exists()


def test_client_retries_a_few_times_with_short_timeouts(s3_server):
    store = store_for(s3_server)
    http = store._client._http  # the PoolManager handed to minio
    assert http.connection_pool_kw["retries"].total == REQUEST_RETRIES <= 3
    timeout = http.connection_pool_kw["timeout"]
    assert timeout.connect_timeout <= 5
    assert timeout.read_timeout <= 30
    assert http.connection_pool_kw["retries"].read <= 1


def test_a_hung_server_surfaces_as_storage_error_after_the_read_timeout(s3_server):
    # Given a store with a 0.5 s read timeout, and a server that accepts but never answers
    store = store_for(s3_server, read_timeout_s=0.5)
    s3_server.pause()

    with pytest.raises(StorageError) as caught:
        store.put_image_stream("k/0", chunked(image_bytes("PNG")), max_bytes=10**7, metadata=META)

    assert_store_error(caught.value, s3_server)
    assert "ReadTimeout" in str(caught.value)
    s3_server.resume()
    assert store.ping()


def test_a_restarted_server_has_its_bucket_again_but_not_its_objects(s3_server):
    # moto keeps state in memory only; see tests/support/s3_server.py
    store = store_for(s3_server)
    store.put_json("k/manifest.json", {"a": 1})

    s3_server.restart()

    assert store.ping()
    assert store.list_keys("k/") == []


def test_a_paused_server_keeps_its_objects(s3_server):
    store = store_for(s3_server)
    store.put_json("k/manifest.json", {"a": 1})

    s3_server.pause()
    s3_server.resume()

    assert store.list_keys("k/") == ["k/manifest.json"]
