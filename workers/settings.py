"""One typed settings object for the whole system.

Every process (worker, producer, CLI, ingress) reads its configuration here and
nowhere else: environment variables with the ``NBQ_`` prefix, plus ``NBQ_<NAME>_FILE``
variants for secrets mounted as files (Docker / Kubernetes secrets).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from nanobanana_queue.workers.brokers import broker_kind, is_redis_url
from nanobanana_queue.workers.probes import DEFAULT_HEALTH_DIR

ENV_PREFIX = "NBQ_"
#: A submitting task's soft time limit, as a share of NBQ_SUBMIT_TIME_LIMIT_S (60 of 90 s):
#: the rest lets it record what its create did before the hard limit kills it.
SUBMIT_SOFT_RATIO = 2 / 3

#: Settings that hold secrets; each also accepts ``NBQ_<NAME>_FILE``.
SECRET_FIELDS = (
    "evolink_api_key",
    "s3_access_key",
    "s3_secret_key",
    "flower_basic_auth",
    "ingress_tokens",
    "callback_secret",
    "notify_secrets",
    "producer_secret",
    "broker_api_url",
    "redis_password",
    "redis_sentinel_password",
)

#: URL schemes of a Redis reached through Sentinel (kombu's transport name, redis-py's client).
SENTINEL_SCHEME = "sentinel://"
#: The job store on a Redis Cluster (``rediss+cluster://`` with TLS); never the broker.
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")

DEFAULT_RESULT_HOSTS = (
    # Where the vendor serves result files; override with NBQ_RESULT_URL_ALLOWED_HOSTS.
    "*.evolink.ai",
    "evolink.ai",
)


class ConfigError(Exception):
    """Configuration is missing or invalid; the message names the variable."""


class Settings(BaseSettings):
    """The ``NBQ_*`` configuration. Documented field by field in the README table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False, frozen=True
    )

    # --- Evolink API -----------------------------------------------------------------
    evolink_api_key: SecretStr | None = None
    evolink_base_url: str = "https://api.evolink.ai"
    http_connect_timeout_s: float = Field(5.0, gt=0)
    http_read_timeout_s: float = Field(15.0, gt=0)

    # --- Broker (Redis or RabbitMQ) and job store (Redis) ------------------------------
    broker_url: str = "redis://127.0.0.1:6379/0"
    # job store; defaults to broker_url, required when the broker is not Redis
    redis_url: str | None = Field(None, validate_default=True)
    # RabbitMQ management API for Flower's Broker tab (http://user:pass@host:15672/api/)
    broker_api_url: SecretStr | None = None
    visibility_timeout_s: int = Field(3600, ge=60)
    job_retention_s: int = Field(7 * 24 * 3600, ge=60)
    key_prefix: str = "nbq"
    # Start even when the store (or a Redis broker) keeps no data across a restart or
    # evicts keys (`nbq dev`, tests); otherwise such a store is refused at start.
    allow_volatile_store: bool = False
    # After the writes that matter (job creation, the create's task id), WAIT for this
    # many replicas to acknowledge (0 = do not wait); shared with the Sentinel setup.
    store_wait_replicas: int = Field(0, ge=0)
    store_wait_timeout_ms: int = Field(100, ge=1)
    # Sentinel (sentinel://h1:26379;sentinel://h2:26379/0 in NBQ_BROKER_URL / NBQ_REDIS_URL):
    # the monitored master's name, the data nodes' and the sentinels' passwords (secrets;
    # a password in the URL wins for the data nodes), TLS to both.
    redis_sentinel_master: str = "mymaster"
    redis_password: SecretStr | None = None
    redis_sentinel_password: SecretStr | None = None
    redis_sentinel_tls: bool = False
    redis_tls_ca_file: str | None = None
    # Seconds a Redis call keeps retrying a lost connection / demoted master (a Sentinel
    # failover takes down-after-milliseconds + election: size this above both).
    redis_failover_timeout_s: float = Field(20.0, gt=0)
    # On a Redis Cluster store (redis+cluster://): per-state index shards, each its own
    # hash tag (with its jobs' records), so that no index key is hot and every script
    # touches one slot.
    store_shards: int = Field(64, ge=1, le=1024)
    # How often each process checks the store's epoch marker (a flush or an empty
    # failover replica is detected within this, at one GET per interval).
    store_epoch_check_s: float = Field(5.0, gt=0)

    # --- S3 / MinIO ----------------------------------------------------------------
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: SecretStr | None = None
    s3_secret_key: SecretStr | None = None
    s3_bucket: str = "nano-banana"
    s3_secure: bool = False
    s3_region: str = "us-east-1"
    s3_prefix: str = "images"
    presign_expiry_s: int = Field(3600, ge=1, le=7 * 24 * 3600)

    # --- Polling -------------------------------------------------------------------
    poll_deadline_s: float = Field(600.0, gt=0)
    poll_first_factor: float = Field(0.7, gt=0)  # first poll at factor x estimated_time
    poll_min_interval_s: float = Field(2.0, gt=0)
    poll_max_interval_s: float = Field(15.0, gt=0)
    poll_jitter_ratio: float = Field(0.1, ge=0, le=1)
    default_estimated_time_s: float = Field(30.0, gt=0)

    # --- Downloads -----------------------------------------------------------------
    max_result_bytes: int = Field(64 * 1024 * 1024, gt=0)
    download_chunk_bytes: int = Field(256 * 1024, gt=0)
    result_url_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_RESULT_HOSTS)
    )  # comma-separated; '*.example.com' matches subdomains
    # Opt-in, exact hosts only (the compose emulator, 127.0.0.1 locally): allowed, and the
    # only hosts whose links may resolve to loopback/private addresses. Empty by default.
    result_url_private_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    result_url_allow_http: bool = False
    download_max_redirects: int = Field(3, ge=0, le=10)
    download_timeout_s: float = Field(120.0, gt=0)

    # --- Resilience ----------------------------------------------------------------
    max_create_attempts: int = Field(3, ge=1, le=10)  # fresh API tasks for retryable codes
    max_transient_retries: int = Field(8, ge=0)
    retry_backoff_base_s: float = Field(1.0, gt=0)
    retry_backoff_max_s: float = Field(60.0, gt=0)
    breaker_probe_interval_s: float = Field(60.0, gt=0)
    # Trust the API's Idempotency-Key to resend a create whose outcome is unknown. Off: the
    # vendor documents no such support (CONTRACT.md), and a resend it ignores pays twice.
    idempotent_creates: bool = False
    at_least_once_creates: bool = False  # resend unknown creates anyway (may pay twice)
    # With callbacks on, how long an unknown-outcome job waits for its task's callback.
    outcome_unknown_wait_s: float = Field(900.0, gt=0)
    creates_per_s: float = Field(0.0, ge=0)  # 0 = unlimited
    queries_per_s: float = Field(0.0, ge=0)
    max_in_flight: int = Field(0, ge=0)
    credit_limit_daily: float = Field(0.0, ge=0)  # 0 = unlimited
    credit_limit_daily_per_producer: float = Field(0.0, ge=0)  # per named producer; 0 = none
    # Fair share of creates between producers (workers/resilience/fairshare.py):
    # "shop:3,batch-jobs:1"; unnamed producers (and jobs without one) weigh 1.
    producer_weights: str = ""
    max_in_flight_per_producer: int = Field(0, ge=0)  # 0 = no per-producer cap
    reconcile_interval_s: float = Field(30.0, gt=0)
    reconcile_in_worker: bool = True  # every worker runs the (idempotent) reconciler loop
    stuck_after_s: float = Field(120.0, gt=0)

    # --- Workers -------------------------------------------------------------------
    # Hard time limit of the tasks that make a create (nbq.submit, and nbq.generate, which
    # submits inline); their soft limit is 2/3 of it. The reconciler takes a submit's claim
    # older than this for a dead worker's (workers/app.py: submit_time_limits_s).
    submit_time_limit_s: float = Field(90.0, gt=0)
    # Each worker renews a lease in the job store every third of this; one not renewed for
    # this long is dead to the reconciler: its submit claims and its broker deliveries are
    # recovered at once (workers/leases.py). 0 turns leases off (the time-limit rule only).
    worker_lease_s: float = Field(15.0, ge=0)
    worker_eta_task_limit: int = Field(2000, ge=1)
    task_events: bool = True
    # The consumer guard (workers/guard/): no message of ours waits longer than this
    # (every countdown we send is clamped to it; the longest by default is a 300 s quota
    # hop), so an ETA further ahead is refused to the dead-letter store, not held.
    max_countdown_s: float = Field(600.0, ge=60)
    max_message_bytes: int = Field(512 * 1024, ge=1024)
    dead_letter_max: int = Field(5000, ge=1)
    # Bytes the dead-letter store may hold, counted on the stored (escaped) JSON plus a
    # per-letter overhead: the bound on the job store's memory a poison flood can take.
    dead_letter_max_bytes: int = Field(32 * 1024 * 1024, ge=256 * 1024)
    dead_letter_retention_s: int = Field(7 * 24 * 3600, ge=60)
    # The probes' heartbeat files (workers/probes.py): where, and how often the worker's
    # event loop (and the standalone reconciler, per pass) touches them.
    health_dir: str = DEFAULT_HEALTH_DIR
    health_interval_s: float = Field(5.0, gt=0)

    # --- Flower, ingress, metrics ----------------------------------------------------
    flower_basic_auth: SecretStr | None = None
    flower_port: int = Field(5555, ge=1, le=65535)
    flower_max_tasks: int = Field(20000, ge=100)
    # Base URL Evolink calls back (https; http only for loopback hosts, for local runs).
    public_callback_url: str | None = None
    # Server secret the callback tokens are derived from (HMAC of the job id, its create
    # round and the token's expiry); required when public_callback_url is set.
    callback_secret: SecretStr | None = Field(None, validate_default=True)
    # With callbacks on, the first poll is a late fallback: at this factor x estimated_time.
    callback_first_poll_factor: float = Field(3.0, gt=0)
    ingress_tokens: SecretStr | None = None  # "producer:token,producer2:token2"
    # Master secret of the producers' keys: a raw nbq.generate naming a producer must
    # prove it speaks for it (workers/producer_keys.py); unset = no raw message can.
    producer_secret: SecretStr | None = None
    max_body_bytes: int = Field(256 * 1024, gt=0)
    # Slow clients (``nbq serve``, docs/operations.md "Ingress limits"): a request's
    # headers must arrive within ingress_header_timeout_s of its first byte (or of the
    # connection), its body within ingress_body_timeout_s of its headers; over that the
    # connection is closed (headers) or answered 408 and closed (body).
    ingress_header_timeout_s: float = Field(10.0, gt=0)
    ingress_body_timeout_s: float = Field(30.0, gt=0)
    # Open connections one ingress process serves at once; more are answered 503.
    ingress_max_connections: int = Field(1000, ge=1)
    metrics_port: int = Field(9808, ge=1, le=65535)
    # A worker process holds its tasks' metric events up to this long and writes them
    # merged (workers/metrics.py, _Pending): ~18 Redis commands per job become ~1
    # (benchmarks/redis_commands.py), at the price of the held events a SIGKILL takes with
    # the process (at most this long of its finished tasks). 0: each task's events are
    # written at its end (a SIGKILL then loses only the running tasks' events).
    metrics_flush_s: float = Field(1.0, ge=0, le=10)

    # --- Completion webhooks (workers/notify/, docs/webhooks.md) -----------------------
    # "producer:whsec_…,producer2:whsec_…"; ":whsec_…" signs producer-less jobs. A job
    # may ask for a webhook only when its producer has a secret here.
    notify_secrets: SecretStr | None = None
    # Per-producer default notify_url: "producer:https://…,producer2:https://…" (a job's
    # own notify_url wins); every producer named here needs a secret.
    notify_urls: str = ""
    # Exact hosts a notify_url may name that resolve to loopback/private addresses
    # (tests, a receiver inside the cluster); empty by default, as for result links.
    notify_private_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Producers whose jobs also send best-effort job.progress webhooks (each new progress
    # value while generating, and the move to downloading); "*" = every producer.
    notify_progress: Annotated[list[str], NoDecode] = Field(default_factory=list)
    notify_allow_http: bool = False  # plain http:// notify URLs (local runs and tests only)
    notify_timeout_s: float = Field(10.0, gt=0)  # one delivery attempt, connect to answer
    notify_backoff_base_s: float = Field(5.0, gt=0)  # first retry after about this long
    notify_backoff_max_s: float = Field(3600.0, gt=0)  # no retry waits longer than this
    # A delivery is retried for this long after its first try, then dead-lettered.
    notify_retry_period_s: float = Field(86400.0, gt=0)

    # --- Logging -------------------------------------------------------------------
    log_level: str = "INFO"
    log_json: bool = False

    # --- Tracing (the standard OpenTelemetry variables, not NBQ_*) ------------------
    # Tracing is on when one of these asks for an exporter (workers/tracing.py); the SDK
    # and its exporter read the rest of OTEL_* (service name, headers, sampler) themselves.
    otel_traces_exporter: str | None = Field(None, validation_alias="OTEL_TRACES_EXPORTER")
    otel_exporter_otlp_endpoint: str | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    otel_sdk_disabled: bool = Field(False, validation_alias="OTEL_SDK_DISABLED")

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """Fill each secret from ``NBQ_<NAME>_FILE`` when the plain variable is unset."""
        if not isinstance(data, dict):
            return data
        for name in SECRET_FIELDS:
            if data.get(name) or os.environ.get(f"{ENV_PREFIX}{name.upper()}"):
                continue
            path = os.environ.get(f"{ENV_PREFIX}{name.upper()}_FILE")
            if path:
                try:
                    data[name] = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ValueError(
                        f"{ENV_PREFIX}{name.upper()}_FILE: cannot read {path}: {exc.strerror}"
                    ) from None
        return data

    @field_validator("producer_weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        from nanobanana_queue.workers.resilience.fairshare import parse_weights

        parse_weights(value)  # a ValueError names the bad part
        return value

    @field_validator("submit_time_limit_s")
    @classmethod
    def _submit_outlasts_a_create(cls, value: float, info: ValidationInfo) -> float:
        """A soft limit inside a create would cut a healthy create off (its outcome unknown):
        the soft limit must outlast the longest create call (connect + read timeouts)."""
        create_s = info.data.get("http_connect_timeout_s", 0) + info.data.get(
            "http_read_timeout_s", 0
        )
        if value * SUBMIT_SOFT_RATIO <= create_s:
            raise ValueError(
                f"its soft limit ({SUBMIT_SOFT_RATIO:.3g} of it) must be longer than one create"
                f" call: NBQ_HTTP_CONNECT_TIMEOUT_S + NBQ_HTTP_READ_TIMEOUT_S = {create_s:g} s"
            )
        return value

    @field_validator("redis_password", "redis_sentinel_password", mode="before")
    @classmethod
    def _empty_password_is_none(cls, value: Any) -> Any:
        """``NBQ_REDIS_PASSWORD=`` (docker-compose passes it empty when unset): no password,
        not AUTH with an empty one (which a Redis without requirepass refuses)."""
        return None if value == "" else value

    @field_validator(
        "result_url_allowed_hosts",
        "result_url_private_hosts",
        "notify_private_hosts",
        mode="before",
    )
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [h.strip().lower() for h in value.split(",") if h.strip()]
        return value

    @field_validator("notify_progress", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        """Producer names as written (not lower-cased: a producer name is exact)."""
        if isinstance(value, str):
            return [n.strip() for n in value.split(",") if n.strip()]
        return value

    @field_validator("evolink_base_url", "public_callback_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("public_callback_url")
    @classmethod
    def _callback_base(cls, value: str | None) -> str | None:
        """https only, except plain http to a loopback host (tests, local dev)."""
        if value is None or value.startswith("https://"):
            return value
        host = (urlsplit(value).hostname or "").lower()
        if host == "localhost" or host == "::1" or host.startswith("127."):
            return value
        raise ValueError("must be an https:// URL (http:// only for loopback hosts)")

    @field_validator("callback_secret")
    @classmethod
    def _callback_secret_set(cls, value: SecretStr | None, info: ValidationInfo) -> Any:
        if info.data.get("public_callback_url") and not (value and value.get_secret_value()):
            raise ValueError("required when NBQ_PUBLIC_CALLBACK_URL is set")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if value.startswith(CLUSTER_SCHEMES):
            raise ValueError(
                "the broker cannot be a Redis Cluster (kombu has no cluster transport, "
                "kombu#2204): use amqp://, redis:// or sentinel:// for the broker and "
                "redis+cluster:// for NBQ_REDIS_URL only"
            )
        broker_kind(value)  # raises ValueError naming the accepted schemes
        if value.startswith(SENTINEL_SCHEME):
            from nanobanana_queue.workers.redis_client import parse_sentinel_url

            parse_sentinel_url(value)  # ValueError names what is wrong
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        broker = info.data.get("broker_url")
        if value is None:
            if broker is not None and broker_kind(broker) != "redis":
                raise ValueError(
                    "required when NBQ_BROKER_URL is not Redis (the job store, breaker, "
                    "limiter and metrics always live in Redis)"
                )
            return None
        if value.startswith(CLUSTER_SCHEMES):
            return value
        if value.startswith(SENTINEL_SCHEME):
            from nanobanana_queue.workers.redis_client import parse_sentinel_url

            parse_sentinel_url(value)  # ValueError names what is wrong
            return value
        if not is_redis_url(value):
            raise ValueError("must be a redis://, rediss://, sentinel:// or redis+cluster:// URL")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _flower_logins(cls, value: SecretStr | None) -> SecretStr | None:
        """Flower's ``user:password[,user:password...]``; a malformed one would start a
        Flower that refuses every login. The value is never echoed (it is a secret)."""
        if value is None:
            return None
        for n, login in enumerate(value.get_secret_value().split(","), start=1):
            user, colon, password = login.partition(":")
            if not (user.strip() and colon and password):
                raise ValueError(
                    f"login {n} is not user:password (several logins: comma-separated); "
                    "the value is not shown here"
                )
        return value

    @field_validator("s3_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not (3 <= len(value) <= 63) or not value.replace("-", "").replace(".", "").isalnum():
            raise ValueError("must be a valid S3 bucket name")
        return value

    @property
    def job_store_url(self) -> str:
        return self.redis_url or self.broker_url

    def require(self, *names: str) -> None:
        """Fail with one clear line naming the first missing variable."""
        for name in names:
            value = getattr(self, name)
            if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} is not set (required here)")

    def api_key(self) -> str:
        self.require("evolink_api_key")
        assert self.evolink_api_key is not None
        return self.evolink_api_key.get_secret_value()


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's error into one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{ENV_PREFIX}{field.upper()}: {message}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once. Tests call ``get_settings.cache_clear()``."""
    return load_settings()
