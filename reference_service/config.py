"""Service settings: every knob the operator renders is one field here.

Values come from `ADBM_*` environment variables (the operator renders them from the
BackendService and its Secret references); the defaults work on a developer machine with local
PostgreSQL, Redis and RabbitMQ.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from reference_service.policy import Policy

DEVELOPMENT_CURSOR_SECRET = "adbm-development-cursor-secret-not-for-production"
"""The built-in cursor key: public (it is in this file), so accepted only in development."""

DEVELOPMENT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/adbm"
"""The admin the admin commands use in development when no admin URL is given: the local
superuser, which may create the database, the app role and the schema."""


def retry_schedule_seconds(max_attempts: int, base_seconds: float) -> float:
    """How long a message can spend in delay queues in all: the backoffs before deliveries 2
    to `max_attempts` (`base`, doubled per attempt; `messaging.topology.Backoff`)."""
    return base_seconds * (2.0 ** (max_attempts - 1) - 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADBM_", extra="ignore", frozen=True)

    environment: Literal["production", "development"] = "production"
    """`development` says the service runs on a developer machine, and only there are the
    public development defaults accepted: the built-in cursor key and the local admin URL.
    The default is production-safe: `serve` refuses to sign cursors with a public key."""

    database_url: SecretStr = SecretStr("postgresql://adbm_app@127.0.0.1:5432/adbm")
    """libpq URI the service connects with: the non-owner app role, never a superuser (`serve`
    refuses a role that row-level security does not bind). The default is the local app role
    that `adbm-service migrate` creates with the defaults."""
    admin_database_url: SecretStr | None = None
    """libpq URI of the admin (schema owner) for `migrate`, `tenants` and `keys`; the service
    itself never uses it. In development it defaults to `DEVELOPMENT_ADMIN_URL`."""
    db_pool_min_size: Annotated[int, Field(ge=0, le=100)] = 1
    db_pool_max_size: Annotated[int, Field(ge=1, le=100)] = 10
    db_pool_acquire_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    db_tenant_setting: str = "app.tenant_id"

    cursor_secret: SecretStr = SecretStr(DEVELOPMENT_CURSOR_SECRET)
    """HMAC key that signs pagination cursors, so clients cannot forge keyset positions.
    Production sets `ADBM_CURSOR_SECRET` from a Secret, the same value on every replica (a
    cursor minted by one replica is followed on another); the default is the public development
    key, which `serve` refuses unless `environment` is `development`."""

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
    outbox_retention_seconds: Annotated[float, Field(ge=0, le=366 * 86_400)] = 86_400.0
    """How long a published outbox row is kept (to look at what was sent) before the relay's
    pruning deletes it. Unpublished rows are never pruned."""
    inbox_retention_seconds: Annotated[float, Field(ge=3600, le=366 * 86_400)] = 7 * 86_400.0
    """How long a consumer remembers a message id it applied, so that a redelivered copy is
    not applied again (`messaging/retention.py` says when a copy can still come). Longer than
    the retry schedule (refused otherwise) and than any outage or backlog during which the
    broker may still hold a copy: the default covers a week."""
    prune_interval_seconds: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    """How often each relay prunes the outbox and the inbox (in small batches)."""
    payment_provider_url: str | None = None
    """Base URL of the payment provider's HTTP API (charges and refunds). Unset, orders are
    refused with 503: the saga could charge nothing."""
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
    cache_bloom_rebuild_seconds: Annotated[float, Field(gt=0, le=7 * 86_400)] = 3600.0
    """How long a tenant's Bloom filter refuses unknown ids before it is built again: the
    longest an id the filter missed (a row written behind the API's back) is refused."""

    policy: Annotated[Policy, NoDecode] = Policy()
    """Rate limits, versioning and idempotency, as JSON in `ADBM_POLICY`."""

    http_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    max_body_bytes: Annotated[int, Field(ge=1, le=64 * 1024 * 1024)] = 1024 * 1024
    """Largest request body accepted; larger ones get a 413 problem."""
    metrics_port: Annotated[int, Field(ge=1, le=65535)] = 9090
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    trace_sampling_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1

    @field_validator("inbox_retention_seconds")
    @classmethod
    def _inbox_outlives_the_retries(cls, value: float, info: ValidationInfo) -> float:
        # A message being retried has a copy in a delay queue until its schedule ends: the
        # inbox must still know it was applied when that copy comes back. (The worker fields
        # come first in the class, so they are validated already; absent when invalid.)
        attempts = info.data.get("worker_max_attempts")
        base = info.data.get("worker_retry_base_seconds")
        if attempts is None or base is None:
            return value
        schedule = retry_schedule_seconds(attempts, base)
        if value <= schedule:
            raise ValueError(
                f"must exceed the retry schedule of ADBM_WORKER_MAX_ATTEMPTS and"
                f" ADBM_WORKER_RETRY_BASE_SECONDS ({schedule:g} s), or a message still being"
                " retried could be applied twice"
            )
        return value

    @field_validator("policy", mode="before")
    @classmethod
    def _policy_json(cls, value: Any) -> Any:
        # Decoded here rather than by pydantic-settings, whose error for bad JSON is an
        # exception naming neither the variable nor where in the text the problem is.
        if not isinstance(value, str | bytes):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            ) from None

    def admin_url(self) -> str | None:
        """The admin's libpq URI: the configured one, else in development the local default."""
        if self.admin_database_url is not None:
            return self.admin_database_url.get_secret_value()
        return DEVELOPMENT_ADMIN_URL if self.environment == "development" else None


def serving_problems(settings: Settings) -> list[str]:
    """Why these settings must not serve requests (empty: they may). Each names its variable."""
    problems: list[str] = []
    if (
        settings.environment != "development"
        and settings.cursor_secret.get_secret_value() == DEVELOPMENT_CURSOR_SECRET
    ):
        problems.append(
            "ADBM_CURSOR_SECRET is not set, and the built-in development key is public: set it"
            " from a Secret (or ADBM_ENVIRONMENT=development on a developer machine)"
        )
    return problems


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
