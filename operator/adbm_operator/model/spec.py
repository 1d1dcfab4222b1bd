"""The BackendService spec: every field with its type, bound, default and description.

`crd.py` renders the CRD's OpenAPI schema from these types, and the operator and `adbm-operator
render` validate with them, so the API server and the offline renderer agree on what is valid.
The cross-field rules live in `validation.py`, the default values in `defaults.py`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AwareDatetime, Field

from . import defaults, validation
from .api import (
    API_VERSION_NAME,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    LABEL_KEY,
    LABEL_VALUE,
    PG_CUSTOM_SETTING,
    PROM_DURATION,
    QUANTITY,
    SECRET_KEY,
    SQL_IDENTIFIER,
)
from .base import ApiModel, Rule


def _dns_label(max_length: int) -> Any:
    return Field(pattern=DNS_LABEL, min_length=1, max_length=max_length)


# --- building blocks -------------------------------------------------------------------------


class SecretKeyRef(ApiModel):
    """A key of a Secret in the BackendService's namespace. Values are never copied into the
    rendered objects: pods read them through secretKeyRef."""

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, min_length=1, max_length=253)]
    """Name of the Secret."""
    key: Annotated[str, Field(pattern=SECRET_KEY, min_length=1, max_length=253)] = "uri"
    """Key in the Secret whose value is the connection URI."""


class ResourceList(ApiModel):
    """CPU and memory quantities, in Kubernetes quantity notation."""

    cpu: Annotated[str | None, Field(pattern=QUANTITY, max_length=32)] = None
    """CPU, e.g. `250m`."""
    memory: Annotated[str | None, Field(pattern=QUANTITY, max_length=32)] = None
    """Memory, e.g. `256Mi`."""


class Resources(ApiModel):
    """Compute resources of one container."""

    requests: ResourceList = ResourceList()
    """Guaranteed resources, used for scheduling."""
    limits: ResourceList = ResourceList()
    """Hard caps; exceeding the memory limit kills the container."""

    rules: ClassVar[tuple[Rule, ...]] = validation.RESOURCES


def _resources(cpu: str, memory: str, memory_limit: str) -> Resources:
    return Resources(
        requests=ResourceList(cpu=cpu, memory=memory), limits=ResourceList(memory=memory_limit)
    )


class Autoscaling(ApiModel):
    """Horizontal autoscaling bounds. When set, the operator renders no `replicas` field, so it
    never fights the autoscaler."""

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = defaults.MIN_REPLICAS
    """Fewest replicas the autoscaler may run."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)]
    """Most replicas the autoscaler may run; counts against the connection budget."""
    target_cpu_utilization_percentage: Annotated[int, Field(ge=1, le=100)] = 70
    """Average CPU utilisation, as a percentage of requests, the autoscaler aims for."""

    rules: ClassVar[tuple[Rule, ...]] = validation.AUTOSCALING


class WorkerScaler(StrEnum):
    CPU = "CPU"
    QUEUE_LENGTH = "QueueLength"


class WorkerAutoscaling(Autoscaling):
    """Autoscaling of a worker group: on CPU with a HorizontalPodAutoscaler, or on RabbitMQ queue
    length with a KEDA ScaledObject (which can also scale to zero)."""

    min_replicas: Annotated[int, Field(ge=0, le=1000)] = defaults.MIN_REPLICAS
    """Fewest replicas; 0 is allowed only with the QueueLength scaler."""
    scaler: WorkerScaler = WorkerScaler.CPU
    """`CPU` renders a HorizontalPodAutoscaler; `QueueLength` renders a KEDA ScaledObject."""
    target_queue_length: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """Ready messages per replica the QueueLength scaler aims for, per queue: with several
    queues the busiest one decides the replica count."""

    rules: ClassVar[tuple[Rule, ...]] = validation.WORKER_AUTOSCALING


# --- database ----------------------------------------------------------------------------------


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class Pool(ApiModel):
    """The bounded connection pool of every API and worker process."""

    min_size: Annotated[int, Field(ge=0, le=100)] = 1
    """Connections each process keeps open when idle."""
    max_size: Annotated[int, Field(ge=1, le=100)] = defaults.POOL_MAX_SIZE
    """Most connections one process opens; counts against the connection budget."""
    acquire_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    """How long a request waits for a free connection before it fails fast with 503."""

    rules: ClassVar[tuple[Rule, ...]] = validation.POOL


class RowLevelSecurity(ApiModel):
    """Tenant isolation by Postgres Row-Level Security. It cannot be turned off: RLS is enabled and
    FORCEd on every governed table, and the app role owns none of them."""

    tenant_setting: Annotated[str, Field(pattern=PG_CUSTOM_SETTING, max_length=63)] = (
        "app.tenant_id"
    )
    """Custom Postgres setting that carries the tenant, set with SET LOCAL per transaction."""
    tenant_column: Annotated[str, Field(pattern=SQL_IDENTIFIER, max_length=63)] = "tenant_id"
    """Column of each governed table compared with the tenant setting."""
    tables: Annotated[
        list[Annotated[str, Field(pattern=SQL_IDENTIFIER, max_length=63)]],
        Field(min_length=1, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ] = list(defaults.RLS_TABLES)
    """Tables the tenant policies govern."""

    rules: ClassVar[tuple[Rule, ...]] = validation.ROW_LEVEL_SECURITY


class Database(ApiModel):
    """The PostgreSQL database the service uses, and how the operator provisions it."""

    name: Annotated[str, Field(pattern=SQL_IDENTIFIER, max_length=63)]
    """Database name."""
    admin_secret_ref: SecretKeyRef
    """Secret with a libpq URI of a role that may create roles and own the schema (e.g. the
    `<cluster>-superuser` Secret of a CloudNativePG Cluster). Used by the operator only."""
    app_role: Annotated[str | None, Field(pattern=SQL_IDENTIFIER, max_length=63)] = None
    """Non-owner role the service connects as (NOSUPERUSER, NOBYPASSRLS); defaults to
    `<name>_app` with dashes as underscores."""
    pool: Pool = Pool()
    """Connection pool limits."""
    connection_budget: Annotated[int, Field(ge=1, le=100_000)] = defaults.CONNECTION_BUDGET
    """Most connections this BackendService may open in total: API replicas and worker replicas
    (at their autoscaling maximum) times pool.maxSize must fit in it."""
    row_level_security: RowLevelSecurity = RowLevelSecurity()
    """Tenant isolation policies."""
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    """What happens to the database objects adbm created when the BackendService is deleted:
    `Retain` leaves everything; `Delete` drops the app role, and the database if adbm created it
    (else only adbm's tenant policies). Only `Delete` puts a finalizer on the object."""
    verify_interval_seconds: Annotated[int, Field(ge=30, le=86_400)] = (
        defaults.VERIFY_INTERVAL_SECONDS
    )
    """How often the operator re-proves tenant isolation as the app role and repairs drift of
    the database (a dropped policy, FORCE turned off, an extra grant), besides every reconcile."""


class Redis(ApiModel):
    """Redis used for rate limits, idempotency keys and the cache."""

    secret_ref: SecretKeyRef
    """Secret with a `redis://` or `rediss://` URI."""
    key_prefix: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9:_.-]+$", max_length=64)] = None
    """Prefix of every key the service writes; defaults to `<namespace>:<name>:`."""


# --- HTTP contract -----------------------------------------------------------------------------


class RateLimitAlgorithm(StrEnum):
    GCRA = "GCRA"
    TOKEN_BUCKET = "TokenBucket"


class RateLimitScope(StrEnum):
    TENANT = "Tenant"
    API_KEY = "ApiKey"


class RedisUnavailable(StrEnum):
    FAIL_OPEN = "FailOpen"
    FAIL_CLOSED = "FailClosed"


class AfterSunset(StrEnum):
    GONE = "Gone"
    SERVE = "Serve"


class HttpMethod(StrEnum):
    ANY = "*"
    GET = "GET"
    POST = "POST"
    PUT = "PUT"
    PATCH = "PATCH"
    DELETE = "DELETE"


class RateQuota(ApiModel):
    """A quota: `requests` per `periodSeconds`, with `burst` requests allowed at once."""

    requests: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """Requests admitted per period, on average."""
    period_seconds: Annotated[int, Field(ge=1, le=86_400)] = 1
    """Length of the period."""
    burst: Annotated[int, Field(ge=1, le=1_000_000)] = 50
    """Requests admitted back to back before the rate applies."""


class RouteRateLimit(RateQuota):
    """A per-route override of the default quota."""

    method: HttpMethod = HttpMethod(defaults.ANY_METHOD)
    """HTTP method the override applies to; `*` for all."""
    path: Annotated[str, Field(pattern=r"^/[A-Za-z0-9/_{}.-]*$", max_length=256)]
    """Route template, e.g. `/api/v1/orders` or `/api/v1/orders/{order_id}`."""


class RateLimit(RateQuota):
    """Rate limiting of every public route (GCRA or token bucket in Redis, one round trip)."""

    algorithm: RateLimitAlgorithm = RateLimitAlgorithm.GCRA
    """Limiting algorithm."""
    scope: RateLimitScope = RateLimitScope.TENANT
    """Whose requests share a quota: all of a tenant's, or each API key's."""
    on_redis_unavailable: RedisUnavailable = RedisUnavailable.FAIL_OPEN
    """`FailOpen` falls back to a per-process local bucket; `FailClosed` answers 503."""
    routes: Annotated[
        list[RouteRateLimit],
        Field(
            max_length=64,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["method", "path"],
            },
        ),
    ] = []
    """Per-route overrides; at most one per method and path."""

    rules: ClassVar[tuple[Rule, ...]] = validation.RATE_LIMIT


class Idempotency(ApiModel):
    """Idempotency keys on critical POST/PUT/PATCH routes."""

    ttl_seconds: Annotated[int, Field(ge=60, le=604_800)] = 86_400
    """How long a stored first response is replayed for a repeated key."""


class DeprecatedVersion(ApiModel):
    """An API version that is still served but on its way out."""

    version: Annotated[str, Field(pattern=API_VERSION_NAME, max_length=4)]
    """Version, e.g. `v1`."""
    deprecated_at: AwareDatetime
    """When it was (or will be) deprecated: sent as the `Deprecation` header (RFC 9745)."""
    sunset_at: AwareDatetime
    """When it stops being served: sent as the `Sunset` header (RFC 8594)."""
    link: Annotated[str | None, Field(pattern=r"^https://", max_length=2048)] = None
    """Migration guide, sent as `Link: <...>; rel="deprecation"`."""
    after_sunset: AfterSunset = AfterSunset.GONE
    """From `sunsetAt` on: `Gone` answers every route of the version with `410 Gone` (and a
    `rel="successor-version"` link to the current version); `Serve` keeps serving it."""

    rules: ClassVar[tuple[Rule, ...]] = validation.DEPRECATED_VERSION


class Versioning(ApiModel):
    """URI versioning (`/api/v1`, `/api/v2`) and deprecation headers."""

    current: Annotated[str, Field(pattern=API_VERSION_NAME, max_length=4)] = (
        defaults.CURRENT_API_VERSION
    )
    """The newest version, never deprecated."""
    deprecated: Annotated[
        list[DeprecatedVersion],
        Field(
            max_length=16,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["version"],
            },
        ),
    ] = []
    """Deprecated versions with their dates."""

    rules: ClassVar[tuple[Rule, ...]] = validation.VERSIONING


# --- queue workers -----------------------------------------------------------------------------


class WorkerGroup(ApiModel):
    """A Deployment of queue workers consuming some queues."""

    name: Annotated[str, _dns_label(30)]
    """Group name, part of the worker Deployment's name."""
    queues: Annotated[
        list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]+$", min_length=1, max_length=255)]],
        Field(min_length=1, max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"}),
    ]
    """RabbitMQ queues the group consumes."""
    replicas: Annotated[int, Field(ge=0, le=1000)] = defaults.WORKER_REPLICAS
    """Replicas when not autoscaled."""
    prefetch: Annotated[int, Field(ge=1, le=1000)] = 16
    """Unacknowledged messages each worker holds at once."""
    resources: Resources = _resources("100m", "128Mi", "256Mi")
    """Compute resources of each worker."""
    autoscaling: WorkerAutoscaling | None = None
    """Autoscaling; when set, `replicas` is ignored."""


class Queue(ApiModel):
    """RabbitMQ, and the worker Deployments that consume from it."""

    secret_ref: SecretKeyRef
    """Secret with an `amqp://` or `amqps://` URI."""
    workers: Annotated[
        list[WorkerGroup],
        Field(
            max_length=16,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = []
    """Worker groups, each its own Deployment."""

    rules: ClassVar[tuple[Rule, ...]] = validation.QUEUE


# --- observability -----------------------------------------------------------------------------


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class OtlpProtocol(StrEnum):
    GRPC = "grpc"
    HTTP = "http"


class OtelCollector(ApiModel):
    """An OpenTelemetry collector sidecar in every pod, rendered into the pod template (no
    injection webhook, so no start-up race)."""

    enabled: bool = True
    """Whether pods carry the collector sidecar."""
    image: Annotated[str, Field(min_length=1, max_length=512)] = defaults.COLLECTOR_IMAGE
    """Collector image."""
    endpoint: Annotated[str | None, Field(min_length=1, max_length=512)] = None
    """Where the collector exports traces, e.g. `tempo-distributor.observability:4317`."""
    protocol: OtlpProtocol = OtlpProtocol.GRPC
    """OTLP protocol of the exporter."""
    insecure: bool = False
    """Export without TLS."""
    resources: Resources = _resources("50m", "64Mi", "128Mi")
    """Compute resources of the sidecar."""

    rules: ClassVar[tuple[Rule, ...]] = validation.OTEL_COLLECTOR


class Tracing(ApiModel):
    """Tracing in the service's OpenTelemetry SDK."""

    sampling_ratio: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Share of new traces sampled (parent-based, trace-id ratio)."""


class ServiceMonitorSpec(ApiModel):
    """A prometheus-operator ServiceMonitor for the API's `metrics` port."""

    enabled: bool = True
    """Whether to render it (skipped, and said in status, when the CRD is not installed)."""
    interval: Annotated[str, Field(pattern=PROM_DURATION, min_length=2, max_length=16)] = "30s"
    """Scrape interval."""
    labels: Annotated[
        dict[
            Annotated[str, Field(pattern=LABEL_KEY, max_length=317)],
            Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)],
        ],
        Field(max_length=16),
    ] = {}
    """Extra labels, e.g. the `release` label your Prometheus selects ServiceMonitors by."""

    rules: ClassVar[tuple[Rule, ...]] = validation.SERVICE_MONITOR


class Observability(ApiModel):
    """Logs, traces and metrics."""

    log_level: LogLevel = LogLevel.INFO
    """Service log level (JSON logs)."""
    tracing: Tracing = Tracing()
    """Tracing settings."""
    otel_collector: OtelCollector
    """Collector sidecar. Required: say where telemetry goes, or opt out with `enabled: false`."""
    service_monitor: ServiceMonitorSpec = ServiceMonitorSpec()
    """Prometheus scraping."""


class BackendServiceSpec(ApiModel):
    """Desired state of a backend deployed to the ADBM standard."""

    image: Annotated[str, Field(min_length=1, max_length=512)] = defaults.IMAGE
    """Service image; defaults to the bundled reference service."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Image pull policy."""
    replicas: Annotated[int, Field(ge=1, le=1000)] = defaults.API_REPLICAS
    """API replicas when not autoscaled."""
    resources: Resources = _resources("250m", "256Mi", "512Mi")
    """Compute resources of each API container."""
    autoscaling: Autoscaling | None = None
    """API autoscaling (HorizontalPodAutoscaler on CPU); when set, `replicas` is ignored."""
    database: Database
    """PostgreSQL."""
    redis: Redis
    """Redis."""
    rate_limit: RateLimit = RateLimit()
    """Rate limits."""
    idempotency: Idempotency = Idempotency()
    """Idempotency keys."""
    queue: Queue | None = None
    """RabbitMQ and queue workers."""
    versioning: Versioning = Versioning()
    """API versions."""
    observability: Observability
    """Logs, traces, metrics."""
    paused: bool = False
    """Stop all writes for this object (children and database) until unpaused."""

    rules: ClassVar[tuple[Rule, ...]] = validation.BACKEND_SERVICE_SPEC
