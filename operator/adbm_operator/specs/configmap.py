"""The service's ConfigMap: every non-secret setting as an `ADBM_*` variable.

Keys are the environment variable names of `reference_service.config.Settings`; the pods load
them with `envFrom`. Rate limits, versioning and idempotency travel as one versioned JSON policy
document (`ADBM_POLICY`), which the service validates at start-up.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from adbm_operator import model
from adbm_operator.model import BackendService
from adbm_operator.specs import labels
from reference_service.policy import (
    DeprecatedVersion,
    IdempotencyPolicy,
    Policy,
    Quota,
    RateLimitPolicy,
    RouteQuota,
    VersioningPolicy,
)

HTTP_PORT = 8000
METRICS_PORT = 9090
OTLP_GRPC_PORT = 4317


def name(obj: BackendService) -> str:
    return labels.child_name(obj, "config")


def policy(obj: BackendService) -> Policy:
    """The HTTP-contract policy document for this BackendService."""
    spec = obj.spec
    rl = spec.rate_limit
    return Policy(
        rate_limit=RateLimitPolicy(
            algorithm=rl.algorithm.value,
            scope=rl.scope.value,
            on_redis_unavailable=rl.on_redis_unavailable.value,
            default=Quota(requests=rl.requests, period_seconds=rl.period_seconds, burst=rl.burst),
            routes=[
                RouteQuota(
                    method=r.method.value,
                    path=r.path,
                    requests=r.requests,
                    period_seconds=r.period_seconds,
                    burst=r.burst,
                )
                for r in rl.routes
            ],
        ),
        versioning=VersioningPolicy(
            current=spec.versioning.current,
            deprecated=[
                DeprecatedVersion(
                    version=d.version,
                    deprecated_at=d.deprecated_at,
                    sunset_at=d.sunset_at,
                    link=d.link,
                    after_sunset=d.after_sunset.value,
                )
                for d in spec.versioning.deprecated
            ],
        ),
        idempotency=IdempotencyPolicy(ttl_seconds=spec.idempotency.ttl_seconds),
    )


def queue_enabled(obj: BackendService) -> bool:
    """Whether the service may accept work that only a worker finishes (`POST /orders`): there
    must be a queue, and a worker group. The outbox relay and the saga's deadline sweep run in the
    worker processes only, so a queue with no worker group would leave every order accepted
    (202) and PENDING forever; the service answers 503 instead when this is false."""
    return obj.spec.queue is not None and bool(obj.spec.queue.workers)


def settings(obj: BackendService) -> dict[str, str]:
    """Non-secret service settings, keyed by environment variable."""
    spec = obj.spec
    db = spec.database
    obs = spec.observability
    env = {
        "ADBM_DB_POOL_MIN_SIZE": str(db.pool.min_size),
        "ADBM_DB_POOL_MAX_SIZE": str(db.pool.max_size),
        "ADBM_DB_POOL_ACQUIRE_TIMEOUT_SECONDS": str(db.pool.acquire_timeout_seconds),
        "ADBM_DB_TENANT_SETTING": db.row_level_security.tenant_setting,
        "ADBM_REDIS_KEY_PREFIX": model.redis_key_prefix(obj),
        "ADBM_QUEUE_ENABLED": "true" if queue_enabled(obj) else "false",
        "ADBM_POLICY": policy(obj).model_dump_json(),
        "ADBM_HTTP_PORT": str(HTTP_PORT),
        "ADBM_METRICS_PORT": str(METRICS_PORT),
        "ADBM_LOG_LEVEL": obs.log_level.value,
        "ADBM_TRACE_SAMPLING_RATIO": str(obs.tracing.sampling_ratio),
        "OTEL_SERVICE_NAME": obj.name,
    }
    if spec.payment_provider is not None:
        provider = spec.payment_provider
        env["ADBM_PAYMENT_PROVIDER_URL"] = provider.url
        env["ADBM_PAYMENT_CONNECT_TIMEOUT_SECONDS"] = str(provider.connect_timeout_seconds)
        env["ADBM_PAYMENT_TIMEOUT_SECONDS"] = str(provider.timeout_seconds)
    if obs.otel_collector.enabled:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{OTLP_GRPC_PORT}"
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "grpc"
    else:
        # No collector: the SDK must not retry exports to an endpoint that is not there.
        env["OTEL_TRACES_EXPORTER"] = "none"
    return env


def configmap(obj: BackendService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": labels.metadata(obj, name(obj), "config"),
        "data": settings(obj),
    }


def checksum(data: dict[str, str]) -> str:
    """A digest of ConfigMap data: equal exactly when the data is equal."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
