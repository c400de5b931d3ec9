"""The one place the project builds its Redis clients: a plain URL or Sentinel.

Workers, producers, the reconciler, the breaker, the limiter, the metrics writer, the
exporter and the ingress all get their client here, so a Sentinel failover is followed
the same way everywhere, without a restart:

- ``sentinel://h1:26379;sentinel://h2:26379;sentinel://h3:26379/0`` (kombu's form, also
  accepted for ``NBQ_REDIS_URL``): a redis-py ``Sentinel`` asks the sentinels for the
  master named ``NBQ_REDIS_SENTINEL_MASTER`` and reconnects to the new one after a
  failover. A demoted master's ``READONLY`` reply is turned into a ``ConnectionError`` by
  redis-py's Sentinel connection, so both are retried.
- Every call retries connection errors for ``NBQ_REDIS_FAILOVER_TIMEOUT_S`` (a failover
  takes ``down-after-milliseconds`` plus an election). A retried call may have run once
  already (its reply was lost with the old master): the job store's scripts recognise
  their own earlier run (see ``workers/jobs/store.py``), the rest is argued safe in
  docs/operations.md ("Redis Sentinel").
- Passwords: a password in the URL is the data nodes' (as kombu reads it);
  ``NBQ_REDIS_PASSWORD`` is used when the URL has none; ``NBQ_REDIS_SENTINEL_PASSWORD``
  is the sentinels' own (``requirepass`` in sentinel.conf). Both accept ``_FILE``.
- ``NBQ_REDIS_SENTINEL_TLS`` turns on TLS to the sentinels and the data nodes
  (``NBQ_REDIS_TLS_CA_FILE`` to trust a private CA); ``rediss://`` (and
  ``rediss+cluster://``) does the same for a plain URL, with the same CA file.

Plain ``redis://`` URLs keep redis-py's own defaults (as before this module).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ConstantBackoff, NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel

from nanobanana_queue.workers.settings import CLUSTER_SCHEMES, SENTINEL_SCHEME, Settings

#: kombu's default Sentinel port.
DEFAULT_SENTINEL_PORT = 26379
#: Pause between two retries of a call during a failover.
RETRY_PAUSE_S = 0.25


@dataclass(frozen=True)
class SentinelUrl:
    """``sentinel://[[user]:password@]host[:port][;sentinel://host[:port]...][/db]``."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = None


def is_sentinel_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(SENTINEL_SCHEME)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Split kombu's ``;``-separated Sentinel URL; ``ValueError`` names the bad part."""
    sentinels: list[tuple[str, int]] = []
    dbs: set[int] = set()
    username = password = None
    for part in (p.strip() for p in url.split(";")):
        if not part:
            continue
        if not part.startswith(SENTINEL_SCHEME):
            raise ValueError(f"every ';'-separated part must be a sentinel:// URL, not {part!r}")
        parsed = urlsplit(part)
        if not parsed.hostname:
            raise ValueError("a sentinel:// part has no host")
        try:
            port = parsed.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            raise ValueError("a sentinel:// part has an invalid port") from None
        sentinels.append((parsed.hostname, port))
        path = parsed.path.strip("/")
        if path:
            if not path.isdigit():
                raise ValueError(f"the database must be a number, not {path!r}")
            dbs.add(int(path))
        if parsed.password and password is None:
            username = unquote(parsed.username) if parsed.username else None
            password = unquote(parsed.password)
    if not sentinels:
        raise ValueError("no sentinel address")
    if len(dbs) > 1:
        raise ValueError("the sentinel:// parts name different databases")
    return SentinelUrl(tuple(sentinels), dbs.pop() if dbs else 0, username, password)


def kombu_sentinel_url(url: str, password: str | None = None) -> str:
    """The same Sentinel URL the way kombu reads it: kombu takes the database and the
    password from the *first* part only, so both go there."""
    parsed = parse_sentinel_url(url)
    secret = parsed.password or password
    auth = f"{parsed.username or ''}:{secret}@" if secret else ""
    parts = [f"sentinel://{host}:{port}/{parsed.db}" for host, port in parsed.sentinels]
    parts[0] = f"sentinel://{auth}{parts[0][len('sentinel://') :]}"
    return ";".join(parts)


def failover_retry(settings: Settings) -> Retry:
    """Retry lost connections (and a demoted master) for the whole failover window."""
    retries = max(1, math.ceil(settings.redis_failover_timeout_s / RETRY_PAUSE_S))
    return Retry(
        ConstantBackoff(RETRY_PAUSE_S),
        retries,
        supported_errors=(
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ReadOnlyError,
        ),
    )


def tls_kwargs(settings: Settings) -> dict[str, Any]:
    """redis-py connection options for TLS to sentinels and data nodes (empty: no TLS)."""
    if not settings.redis_sentinel_tls:
        return {}
    options: dict[str, Any] = {"ssl": True, "ssl_cert_reqs": "required"}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    return options


def sentinel_kwargs(settings: Settings, *, socket_timeout: float) -> dict[str, Any]:
    """Connection options for the sentinels themselves (their password, TLS, timeouts).

    Each sentinel is asked once (``retry``): the next sentinel is the retry, and the
    master's client repeats the whole discovery for the failover window. redis-py's
    default retried each one 3 times with seconds of backoff first, so one dead sentinel
    (or a refused certificate) held up every discovery: a store without the CA took over
    two minutes to fail instead of NBQ_REDIS_FAILOVER_TIMEOUT_S.
    """
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        **tls_kwargs(settings),
    }
    if settings.redis_sentinel_password is not None:
        options["password"] = settings.redis_sentinel_password.get_secret_value()
    return options


class _Sentinel(Sentinel):
    """redis-py's ``Sentinel`` whose "no master found" says why each sentinel failed:
    redis-py 8 names an error by its class only (``network:ConnectionError``), which hides
    a refused certificate or a wrong password behind "No master found"."""

    def discover_master(self, service_name: str) -> tuple[str, int]:
        """redis-py's discovery (first sentinel naming a healthy master wins and moves to
        the front), keeping each failed sentinel's own error text (host, port, reason;
        never a password) for the error."""
        reasons: list[str] = []
        for n, sentinel in enumerate(self.sentinels):
            try:
                masters: dict[str, Any] = sentinel.sentinel_masters()  # type: ignore[assignment]
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                where = sentinel.connection_pool.connection_kwargs
                reasons.append(f"sentinel {where.get('host')}:{where.get('port')}: {exc}")
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                self.sentinels[0], self.sentinels[n] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
        detail = f": {'; '.join(reasons)}" if reasons else ""
        raise MasterNotFoundError(f"No master found for {service_name!r}{detail}")


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value()) or None


def redis_client(
    settings: Settings,
    url: str | None = None,
    *,
    socket_timeout: float = 10.0,
    socket_connect_timeout: float = 5.0,
    health_check_interval: int = 10,
) -> redis.Redis:
    """A client for ``url`` (default: the job store's), following Sentinel failovers."""
    url = url or settings.job_store_url
    if is_cluster_url(url):
        return cluster_client(
            settings, url, socket_timeout=socket_timeout, connect_timeout=socket_connect_timeout
        )
    if is_sentinel_url(url):
        parsed = parse_sentinel_url(url)
        manager = _Sentinel(
            list(parsed.sentinels),
            sentinel_kwargs=sentinel_kwargs(settings, socket_timeout=socket_connect_timeout),
        )
        client: redis.Redis = manager.master_for(
            settings.redis_sentinel_master,
            db=parsed.db,
            username=parsed.username,
            password=parsed.password or _secret(settings.redis_password),
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            health_check_interval=health_check_interval,
            retry=failover_retry(settings),
            **tls_kwargs(settings),
        )
        return client
    extra: dict[str, Any] = {}
    if settings.redis_password is not None and not urlsplit(url).password:
        extra["password"] = settings.redis_password.get_secret_value()
    if url.startswith("rediss://") and settings.redis_tls_ca_file and "ssl_ca_certs=" not in url:
        extra["ssl_ca_certs"] = settings.redis_tls_ca_file  # a private CA to trust
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
        health_check_interval=health_check_interval,
        **extra,
    )


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and str(url).startswith(CLUSTER_SCHEMES)


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """``redis+cluster://[:pw@]h1:7000,h2:7001/`` → the startup nodes."""
    netloc = url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    nodes = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        nodes.append((host or item.strip(), int(port) if host and port else 6379))
    return nodes


def cluster_client(
    settings: Settings, url: str, *, socket_timeout: float, connect_timeout: float
) -> redis.Redis:
    """A ``RedisCluster`` (typed as ``Redis``: the commands the project uses are the same;
    every multi-key call it makes stays inside one hash tag, see ``is_cluster``)."""
    from redis.cluster import ClusterNode, RedisCluster

    parsed = urlsplit(url.split(",", 1)[0])
    password = unquote(parsed.password) if parsed.password else _secret(settings.redis_password)
    return RedisCluster(  # type: ignore[return-value]
        startup_nodes=[
            ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in cluster_nodes(url)
        ],
        username=unquote(parsed.username) if parsed.username else None,
        password=password,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        ssl=url.startswith("rediss+"),
        ssl_ca_certs=settings.redis_tls_ca_file if url.startswith("rediss+") else None,
        retry=failover_retry(settings),
    )


def is_cluster(client: object) -> bool:
    """Whether ``client`` talks to a Redis Cluster: then multi-key scripts, transactions
    and ``MULTI`` pipelines must keep their keys in one hash tag (``{...}``)."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def tagged(name: str, client: object) -> str:
    """``{name}`` on a cluster (one slot for every key built on it), ``name`` otherwise:
    the keys of a single Redis stay as they always were."""
    return f"{{{name}}}" if is_cluster(client) else name


def check_store_shards(client: redis.Redis, settings: Settings) -> None:
    """A cluster store remembers its shard count (``<prefix>:store:shards``, set by the
    first process); a process configured with another count would look for every job in
    the wrong shard, so it refuses to start, naming the variable."""
    from nanobanana_queue.workers.settings import ConfigError

    key = f"{settings.key_prefix}:store:shards"
    client.set(key, settings.store_shards, nx=True)
    stored = client.get(key)
    if stored is not None and int(stored) != settings.store_shards:
        raise ConfigError(
            f"NBQ_STORE_SHARDS={settings.store_shards} but this cluster store was built with "
            f"{int(stored)} shards: use {int(stored)} (the count is fixed for a store's life)"
        )


def is_redis_broker(url: str) -> bool:
    """A broker URL whose queues live in Redis (plain or through Sentinel)."""
    return url.startswith(("redis://", "rediss://", "unix://", SENTINEL_SCHEME))
