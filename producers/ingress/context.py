"""What the routes share: settings, the producer API, tokens, batches, readiness checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from nanobanana_queue.producers.api import Producer
from nanobanana_queue.producers.ingress.auth import TokenRegistry
from nanobanana_queue.producers.ingress.batches import BatchStore
from nanobanana_queue.producers.ingress.errors import ApiError
from nanobanana_queue.workers.redis_client import redis_client
from nanobanana_queue.workers.settings import Settings

#: Seconds a readiness probe waits for each dependency.
READY_TIMEOUT_S = 2.0


@dataclass
class IngressContext:
    settings: Settings
    producer: Producer
    tokens: TokenRegistry
    batches: BatchStore
    _broker: redis.Redis | None = field(default=None, repr=False)

    def broker(self) -> redis.Redis:
        if self._broker is None:
            self._broker = redis_client(
                self.settings,
                self.settings.broker_url,
                socket_timeout=READY_TIMEOUT_S,
                socket_connect_timeout=READY_TIMEOUT_S,
            )
        return self._broker


def get_context(request: Request) -> IngressContext:
    context = request.app.state.ingress
    assert isinstance(context, IngressContext)
    return context


Context = Annotated[IngressContext, Depends(get_context)]

_bearer = HTTPBearer(auto_error=False, description="A producer token from NBQ_INGRESS_TOKENS")


def current_producer(
    request: Request,
    context: Context,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The producer named by the bearer token (kept for the access log); 401 otherwise."""
    producer = context.tokens.producer_for(credentials.credentials if credentials else None)
    if producer is None:
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.producer = producer
    return producer


ProducerName = Annotated[str, Depends(current_producer)]
