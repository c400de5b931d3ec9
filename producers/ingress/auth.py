"""Bearer tokens for producers: ``NBQ_INGRESS_TOKENS="producer:token,producer2:token2"``.

Only SHA-256 digests of the tokens are kept after parsing; a presented token is hashed
and compared with every digest in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from nanobanana_queue.workers.jobs.ids import PRODUCER_PATTERN
from nanobanana_queue.workers.settings import ConfigError, Settings


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class TokenRegistry:
    """Producer names by token digest."""

    entries: tuple[tuple[bytes, str], ...]

    @classmethod
    def parse(cls, spec: str) -> TokenRegistry:
        """Parse ``producer:token`` pairs separated by commas; raises ConfigError."""
        entries: list[tuple[bytes, str]] = []
        for position, item in enumerate(spec.split(","), start=1):
            item = item.strip()
            if not item:
                continue
            producer, sep, token = item.partition(":")
            producer, token = producer.strip(), token.strip()
            if not sep or not producer or not token:
                raise ConfigError(f"NBQ_INGRESS_TOKENS: entry {position} is not producer:token")
            if not PRODUCER_PATTERN.fullmatch(producer) or ".." in producer:
                # The name is its job-id namespace (workers/jobs/ids.py).
                raise ConfigError(
                    f"NBQ_INGRESS_TOKENS: entry {position}: the producer name must be 1-64 "
                    "characters of A-Z a-z 0-9 _ . -"
                )
            entries.append((_digest(token), producer))
        return cls(tuple(entries))

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenRegistry:
        secret = settings.ingress_tokens
        return cls.parse(secret.get_secret_value() if secret is not None else "")

    def __repr__(self) -> str:
        return f"TokenRegistry({len(self.entries)} tokens)"

    def producer_for(self, token: str | None) -> str | None:
        """The producer a token names, or None; checks every entry (no early exit)."""
        if not token:
            return None
        presented = _digest(token)
        found: str | None = None
        for digest, producer in self.entries:
            if hmac.compare_digest(digest, presented):
                found = producer
        return found
