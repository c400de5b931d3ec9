"""Producer identity on the broker: who may name a producer in a raw ``nbq.generate``.

A job named by a producer lives in that producer's id scope (``bob~order-7``) and is
returned to that producer only. Anyone who can write to the broker can send
``nbq.generate``; without a proof, such a sender could create ``bob~order-7`` before bob
does (bob's own request would then return the sender's job, charged to bob). So a raw
message that names a producer must carry ``producer_proof``:

    key   = HMAC-SHA256(NBQ_PRODUCER_SECRET, "nbq-producer-key:" + producer)   (hex)
    proof = HMAC-SHA256(key, "nbq.generate:" + stored job id)                   (hex)

The master secret stays with the workers, the ingress and the Python ``Producer`` (who
already write the job store and are trusted); a service that only reaches the broker gets
its own ``key`` (``nbq producer-key NAME``), which lets it prove only its own name. A
message whose job already has a record needs no proof (the record was written by someone
with the store, and the message only points at it). Without a valid proof, a message
naming a producer for a job with no record is refused (logged ``intake_refused``,
``nbq_ownership_refused_total{entry="generate", reason="unproven_producer"}``), nothing
is recorded or charged.
"""

from __future__ import annotations

import hashlib
import hmac

from nanobanana_queue.workers.settings import Settings


def producer_key(secret: str, producer: str) -> str:
    """The key a producer signs its messages with (derived from the master secret)."""
    return hmac.new(
        secret.encode(), f"nbq-producer-key:{producer}".encode(), hashlib.sha256
    ).hexdigest()


def producer_proof(key: str, job_id: str) -> str:
    """The proof for one stored job id, made with the producer's key."""
    return hmac.new(key.encode(), f"nbq.generate:{job_id}".encode(), hashlib.sha256).hexdigest()


def proof_for(settings: Settings, producer: str | None, job_id: str) -> str | None:
    """The proof this process can make for ``producer`` (None without a producer or secret)."""
    if producer is None or settings.producer_secret is None:
        return None
    secret = settings.producer_secret.get_secret_value()
    if not secret:
        return None
    return producer_proof(producer_key(secret, producer), job_id)


def proof_matches(settings: Settings, producer: str, job_id: str, proof: str | None) -> bool:
    """Constant-time check of a message's proof; False when no secret is configured."""
    expected = proof_for(settings, producer, job_id)
    if expected is None or not proof:
        return False
    return hmac.compare_digest(expected.encode(), proof.encode())
