"""Defaults: the values a field takes when left out, and the values computed from the object.

The field defaults are declared on the types (`spec.py`) from these constants; the cross-field
rules (`validation.py`) read the same constants, since a rule's CEL must treat an absent field
as its default.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .resource import BackendService
    from .spec import Autoscaling, BackendServiceSpec

# This release's reference-service image (reference_service/Dockerfile builds it), tagged with
# the installed distribution's version: the model imports nothing else of the operator.
IMAGE = f"adbm/reference-service:{metadata.version('adbm')}"
COLLECTOR_IMAGE = "otel/opentelemetry-collector:0.140.0"
API_REPLICAS = 2
WORKER_REPLICAS = 1
MIN_REPLICAS = 1
POOL_MAX_SIZE = 10
CONNECTION_BUDGET = 100
VERIFY_INTERVAL_SECONDS = 300
CURRENT_API_VERSION = "v2"
ANY_METHOD = "*"
RLS_TABLES = ("api_keys", "accounts", "products", "orders", "outbox")


def app_role(obj: BackendService) -> str:
    """The Postgres role the service connects as: `database.appRole`, else `<name>_app`."""
    if obj.spec.database.app_role is not None:
        return obj.spec.database.app_role
    return f"{obj.name.replace('-', '_')}_app"[:63]


def redis_key_prefix(obj: BackendService) -> str:
    """The prefix of every Redis key the service writes: `redis.keyPrefix`, else
    `<namespace>:<name>:`, so two BackendServices sharing a Redis never collide."""
    return obj.spec.redis.key_prefix or f"{obj.namespace}:{obj.name}:"


def _max_replicas(replicas: int, autoscaling: Autoscaling | None) -> int:
    return autoscaling.max_replicas if autoscaling is not None else replicas


def api_max_replicas(spec: BackendServiceSpec) -> int:
    return _max_replicas(spec.replicas, spec.autoscaling)


def worker_max_replicas(spec: BackendServiceSpec) -> int:
    if spec.queue is None:
        return 0
    return sum(_max_replicas(w.replicas, w.autoscaling) for w in spec.queue.workers)


def max_connections(spec: BackendServiceSpec) -> int:
    """The most database connections the spec can open: every API and worker replica, at its
    autoscaling maximum, times pool.maxSize."""
    return (api_max_replicas(spec) + worker_max_replicas(spec)) * spec.database.pool.max_size


def with_defaults(obj: BackendService) -> dict[str, Any]:
    """The object as the API server stores it: every spec default applied. Metadata is echoed as
    given, since the operator does not own it."""
    body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["metadata"] = obj.metadata.model_dump(mode="json", exclude_unset=True)
    return body


def with_computed_defaults(obj: BackendService) -> dict[str, Any]:
    """The object as the operator acts on it: every default, including the ones computed from
    the object (the app role and the Redis key prefix)."""
    body = with_defaults(obj)
    body["spec"]["database"].setdefault("appRole", app_role(obj))
    body["spec"]["redis"].setdefault("keyPrefix", redis_key_prefix(obj))
    return body
