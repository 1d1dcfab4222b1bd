"""Service settings: every knob the operator renders is one field here.

Values come from `ADBM_*` environment variables (the operator renders them from the
BackendService and its Secret references); the defaults work on a developer machine with local
PostgreSQL, Redis and RabbitMQ.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from reference_service.policy import Policy


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADBM_", extra="ignore", frozen=True)

    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/adbm")
    """libpq URI the service connects with (the non-owner app role in production)."""
    db_pool_min_size: Annotated[int, Field(ge=0, le=100)] = 1
    db_pool_max_size: Annotated[int, Field(ge=1, le=100)] = 10
    db_pool_acquire_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    db_tenant_setting: str = "app.tenant_id"

    cursor_secret: SecretStr = SecretStr("adbm-development-cursor-secret-not-for-production")
    """HMAC key that signs pagination cursors, so clients cannot forge keyset positions. This
    default is for a developer machine only: production sets `ADBM_CURSOR_SECRET` from a Secret,
    the same value on every replica (a cursor minted by one replica is followed on another)."""

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_key_prefix: str = "adbm:"

    queue_enabled: bool = True
    """False when the BackendService has no queue: slow work then runs nowhere, so the routes
    that need it answer 503 instead of accepting work that would never be done."""
    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")

    # --- Workers, the outbox relay, the order saga and the product cache ---------------------
    queue_prefix: str = ""
    """Prepended to every queue name the service declares, publishes to and consumes (empty in a
    pod: one broker vhost per BackendService; tests set one to share a broker)."""
    worker_max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    """Deliveries of one message before it goes to the dead-letter queue `<queue>.dead`."""
    worker_retry_base_seconds: Annotated[float, Field(gt=0, le=3600)] = 1.0
    """Delay before the first retry; each further retry waits twice as long."""
    worker_shutdown_grace_seconds: Annotated[float, Field(gt=0, le=600)] = 45.0
    """On SIGTERM, how long in-flight messages get to finish before they are requeued: inside
    the worker pod's 60 s termination grace period."""
    relay_batch_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    relay_poll_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    """How often the outbox relay looks for new rows when the last look found none."""
    payment_provider_url: str = "http://127.0.0.1:8081"
    """Base URL of the payment provider's HTTP API (charges and refunds)."""
    payment_connect_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    payment_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 5.0
    """Whole-request timeout of one call to the payment provider."""
    saga_step_timeout_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    """A saga that has not moved for this long is driven again by the recovery sweep."""
    saga_deadline_seconds: Annotated[float, Field(gt=0, le=7 * 86_400)] = 600.0
    """A saga still moving forward this long after it started is compensated instead."""
    saga_sweep_interval_seconds: Annotated[float, Field(gt=0, le=3600)] = 10.0
    cache_ttl_seconds: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    cache_null_ttl_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    """How long "no such row" is cached: short, so a row created meanwhile shows up soon."""
    cache_ttl_jitter: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    """Each TTL is drawn from [ttl * (1 - jitter), ttl], so keys filled together do not all
    expire together."""
    cache_lock_lease_ms: Annotated[int, Field(ge=10, le=60_000)] = 2000
    """Lease of the rebuild mutex: a holder that dies blocks the key at most this long."""
    cache_bloom_capacity: Annotated[int, Field(ge=1, le=1_000_000_000)] = 100_000
    cache_bloom_error_rate: Annotated[float, Field(gt=0, lt=1)] = 0.01

    policy: Policy = Policy()
    """Rate limits, versioning and idempotency, as JSON in `ADBM_POLICY`."""

    http_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    max_body_bytes: Annotated[int, Field(ge=1, le=64 * 1024 * 1024)] = 1024 * 1024
    """Largest request body accepted; larger ones get a 413 problem."""
    metrics_port: Annotated[int, Field(ge=1, le=65535)] = 9090
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    trace_sampling_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1


def redact_url(url: str) -> str:
    """The URL with any password replaced, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def describe(settings: Settings) -> dict[str, Any]:
    """Effective settings as printable JSON: URLs shown without their passwords, other secrets
    (which are secret as a whole, like the cursor key) not at all."""
    shown = settings.model_dump(mode="json")
    for name, value in settings:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            shown[name] = redact_url(secret) if "://" in secret else "***"
    return shown
