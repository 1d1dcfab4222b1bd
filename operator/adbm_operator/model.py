"""The BackendService API: the single source of truth for its spec, status and validation.

Every field, default, bound and cross-field rule lives here once. `crd.py` renders the CRD
(OpenAPI schema and CEL rules) from these models, and the operator and `adbm-operator render`
validate with the same models, so the API server and the offline renderer agree on what is valid.

A cross-field rule is written twice on purpose, side by side in one `Rule`: as CEL for the API
server and as Python for the offline path. Tests evaluate every CEL expression against the same
samples as the Python predicate, so the two cannot drift apart silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from adbm_operator import quantity

GROUP = "adbm.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "BackendService"
PLURAL = "backendservices"
SINGULAR = "backendservice"
SHORT_NAMES = ("bsvc",)

DEFAULT_IMAGE = "adbm/reference-service:0.1.0"
DEFAULT_COLLECTOR_IMAGE = "otel/opentelemetry-collector:0.140.0"

# Patterns shared with Kubernetes' own validation, so a value accepted here is accepted there.
DNS_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS_1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
QUANTITY = quantity.PATTERN
# Prometheus duration as the prometheus-operator CRDs validate it, less its bare `0` (a zero
# interval is caught by a rule: it would silently fall back to Prometheus' global default).
PROM_DURATION = (
    r"^(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?$"
)
SQL_IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"
# A custom Postgres setting must be namespaced: `prefix.name`.
PG_CUSTOM_SETTING = r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$"
API_VERSION_NAME = r"^v[1-9][0-9]{0,2}$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# A label key: optional DNS-subdomain prefix and `/`, then a name of at most 63 characters.
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the API server, the same predicate in Python for offline use."""

    cel: str
    message: str
    holds: Callable[[Any], bool]


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields rejected, rules enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )

    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).rules:
            if not rule.holds(self):
                raise ValueError(rule.message)
        return self

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.rules:
            target = handler.resolve_ref_schema(schema)
            target["x-kubernetes-validations"] = [
                {"rule": r.cel, "message": r.message} for r in cls.rules
            ]
        return schema


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


def _not_above(requests: str | None, limits: str | None) -> bool:
    return requests is None or limits is None or quantity.parse(requests) <= quantity.parse(limits)


def _request_within_limit(resource: Literal["cpu", "memory"]) -> Rule:
    # Kubernetes CEL's quantity library compares quantities by value, as the Python side does.
    return Rule(
        cel=f"!has(self.requests) || !has(self.limits) || !has(self.requests.{resource})"
        f" || !has(self.limits.{resource})"
        f" || !quantity(self.requests.{resource}).isGreaterThan(quantity(self.limits.{resource}))",
        message=f"requests.{resource} must not exceed limits.{resource}",
        holds=lambda s: _not_above(getattr(s.requests, resource), getattr(s.limits, resource)),
    )


class Resources(ApiModel):
    """Compute resources of one container."""

    requests: ResourceList = ResourceList()
    """Guaranteed resources, used for scheduling."""
    limits: ResourceList = ResourceList()
    """Hard caps; exceeding the memory limit kills the container."""

    rules: ClassVar[tuple[Rule, ...]] = (
        _request_within_limit("cpu"),
        _request_within_limit("memory"),
    )


def _resources(cpu: str, memory: str, memory_limit: str) -> Resources:
    return Resources(
        requests=ResourceList(cpu=cpu, memory=memory), limits=ResourceList(memory=memory_limit)
    )


class Autoscaling(ApiModel):
    """Horizontal autoscaling bounds. When set, the operator renders no `replicas` field, so it
    never fights the autoscaler."""

    min_replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    """Fewest replicas the autoscaler may run."""
    max_replicas: Annotated[int, Field(ge=1, le=1000)]
    """Most replicas the autoscaler may run; counts against the connection budget."""
    target_cpu_utilization_percentage: Annotated[int, Field(ge=1, le=100)] = 70
    """Average CPU utilisation, as a percentage of requests, the autoscaler aims for."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.minReplicas <= self.maxReplicas",
            message="minReplicas must not exceed maxReplicas",
            holds=lambda s: s.min_replicas <= s.max_replicas,
        ),
    )


class WorkerScaler(StrEnum):
    CPU = "CPU"
    QUEUE_LENGTH = "QueueLength"


class WorkerAutoscaling(Autoscaling):
    """Autoscaling of a worker group: on CPU with a HorizontalPodAutoscaler, or on RabbitMQ queue
    length with a KEDA ScaledObject (which can also scale to zero)."""

    min_replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Fewest replicas; 0 is allowed only with the QueueLength scaler."""
    scaler: WorkerScaler = WorkerScaler.CPU
    """`CPU` renders a HorizontalPodAutoscaler; `QueueLength` renders a KEDA ScaledObject."""
    target_queue_length: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    """Ready messages per replica the QueueLength scaler aims for, per queue: with several
    queues the busiest one decides the replica count."""

    rules: ClassVar[tuple[Rule, ...]] = (
        *Autoscaling.rules,
        Rule(
            cel="self.scaler == 'QueueLength' || self.minReplicas >= 1",
            message="minReplicas 0 needs scaler QueueLength: a HorizontalPodAutoscaler "
            "cannot scale to zero",
            holds=lambda s: s.scaler == WorkerScaler.QUEUE_LENGTH or s.min_replicas >= 1,
        ),
    )


# --- database ----------------------------------------------------------------------------------


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class Pool(ApiModel):
    """The bounded connection pool of every API and worker process."""

    min_size: Annotated[int, Field(ge=0, le=100)] = 1
    """Connections each process keeps open when idle."""
    max_size: Annotated[int, Field(ge=1, le=100)] = 10
    """Most connections one process opens; counts against the connection budget."""
    acquire_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    """How long a request waits for a free connection before it fails fast with 503."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.minSize <= self.maxSize",
            message="pool.minSize must not exceed pool.maxSize",
            holds=lambda s: s.min_size <= s.max_size,
        ),
    )


DEFAULT_RLS_TABLES = ("api_keys", "accounts", "products", "orders", "outbox")


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
    ] = list(DEFAULT_RLS_TABLES)
    """Tables the tenant policies govern."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.tables.all(t, self.tables.exists_one(u, u == t))",
            message="rowLevelSecurity.tables must not repeat a table",
            holds=lambda s: len(set(s.tables)) == len(s.tables),
        ),
    )


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
    connection_budget: Annotated[int, Field(ge=1, le=100_000)] = 100
    """Most connections this BackendService may open in total: API replicas and worker replicas
    (at their autoscaling maximum) times pool.maxSize must fit in it."""
    row_level_security: RowLevelSecurity = RowLevelSecurity()
    """Tenant isolation policies."""
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    """What happens to the app role and schema when the BackendService is deleted."""


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

    method: HttpMethod = HttpMethod.ANY
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

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.routes.all(r, self.routes.exists_one(o, o.method == r.method"
            " && o.path == r.path))",
            message="rateLimit.routes must not repeat a method and path",
            holds=lambda s: len({(r.method, r.path) for r in s.routes}) == len(s.routes),
        ),
    )


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

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="timestamp(self.sunsetAt) >= timestamp(self.deprecatedAt)",
            message="sunsetAt must not be before deprecatedAt",
            holds=lambda s: s.sunset_at >= s.deprecated_at,
        ),
    )


class Versioning(ApiModel):
    """URI versioning (`/api/v1`, `/api/v2`) and deprecation headers."""

    current: Annotated[str, Field(pattern=API_VERSION_NAME, max_length=4)] = "v2"
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

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!self.deprecated.exists(d, d.version == self.current)",
            message="the current version cannot be deprecated",
            holds=lambda s: all(d.version != s.current for d in s.deprecated),
        ),
        Rule(
            cel="self.deprecated.all(d, self.deprecated.exists_one(e, e.version == d.version))",
            message="versioning.deprecated must not repeat a version",
            holds=lambda s: len({d.version for d in s.deprecated}) == len(s.deprecated),
        ),
    )


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
    replicas: Annotated[int, Field(ge=0, le=1000)] = 1
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

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.workers.all(w, self.workers.exists_one(o, o.name == w.name))",
            message="queue.workers must not repeat a name",
            holds=lambda s: len({w.name for w in s.workers}) == len(s.workers),
        ),
    )


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
    image: Annotated[str, Field(min_length=1, max_length=512)] = DEFAULT_COLLECTOR_IMAGE
    """Collector image."""
    endpoint: Annotated[str | None, Field(min_length=1, max_length=512)] = None
    """Where the collector exports traces, e.g. `tempo-distributor.observability:4317`."""
    protocol: OtlpProtocol = OtlpProtocol.GRPC
    """OTLP protocol of the exporter."""
    insecure: bool = False
    """Export without TLS."""
    resources: Resources = _resources("50m", "64Mi", "128Mi")
    """Compute resources of the sidecar."""

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!self.enabled || has(self.endpoint)",
            message="otelCollector.endpoint is required when the collector sidecar is enabled;"
            " set it, or set enabled: false",
            holds=lambda s: not s.enabled or s.endpoint is not None,
        ),
    )


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

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.interval.matches('[1-9]')",
            message="serviceMonitor.interval must not be zero",
            holds=lambda s: re.search("[1-9]", s.interval) is not None,
        ),
    )


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


# --- the resource ------------------------------------------------------------------------------


def _max_replicas(replicas: int, autoscaling: Autoscaling | None) -> int:
    return autoscaling.max_replicas if autoscaling is not None else replicas


def max_connections(spec: BackendServiceSpec) -> int:
    """The most database connections the spec can open: every API and worker replica, at its
    autoscaling maximum, times pool.maxSize."""
    pods = _max_replicas(spec.replicas, spec.autoscaling)
    if spec.queue is not None:
        pods += sum(_max_replicas(w.replicas, w.autoscaling) for w in spec.queue.workers)
    return pods * spec.database.pool.max_size


class BackendServiceSpec(ApiModel):
    """Desired state of a backend deployed to the ADBM standard."""

    image: Annotated[str, Field(min_length=1, max_length=512)] = DEFAULT_IMAGE
    """Service image; defaults to the bundled reference service."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Image pull policy."""
    replicas: Annotated[int, Field(ge=1, le=1000)] = 2
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

    # Kubernetes CEL has `sum()` on lists of numbers (its list library); the API server rejects
    # the spec before the operator sees it.
    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="((has(self.autoscaling) ? self.autoscaling.maxReplicas : self.replicas)"
            " + (has(self.queue) ? self.queue.workers.map(w, has(w.autoscaling)"
            " ? w.autoscaling.maxReplicas : w.replicas).sum() : 0))"
            " * self.database.pool.maxSize <= self.database.connectionBudget",
            message="API and worker replicas (at their autoscaling maximum) times"
            " database.pool.maxSize exceed database.connectionBudget",
            holds=lambda s: max_connections(s) <= s.database.connection_budget,
        ),
    )


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of the observed state, in the Kubernetes condition format."""

    type: Annotated[str, Field(max_length=64)]
    """Condition type, e.g. `Ready`."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: Annotated[
        str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=128)
    ]
    """CamelCase reason."""
    message: Annotated[str, Field(max_length=32_768)] = ""
    """Human-readable detail."""
    last_transition_time: datetime
    """When the status last changed."""
    observed_generation: Annotated[int, Field(ge=0)] = 0
    """Generation of the spec this condition was computed for."""


class WorkloadSummary(ApiModel):
    """Replica counts of one Deployment as observed."""

    name: Annotated[str, Field(max_length=253)]
    """Deployment name."""
    desired_replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas asked for (the autoscaler's current choice when autoscaled)."""
    available_replicas: Annotated[int, Field(ge=0)] = 0
    """Replicas of the current revision that are available."""


class ChildSummary(ApiModel):
    """One object the operator manages for this BackendService."""

    api_version: Annotated[str, Field(max_length=253)]
    """apiVersion of the child."""
    kind: Annotated[str, Field(max_length=63)]
    """Kind of the child."""
    name: Annotated[str, Field(max_length=253)]
    """Name of the child."""
    state: Literal["Applied", "Skipped", "Failed"]
    """Outcome of the last reconcile for this child."""
    message: Annotated[str, Field(max_length=4096)] = ""
    """Why it was skipped or failed."""


class BackendServiceStatus(ApiModel):
    """Observed state; written by the operator from what it observed, not what it attempted."""

    observed_generation: Annotated[int, Field(ge=0)] = 0
    """Generation of the spec last reconciled."""
    conditions: Annotated[
        list[Condition],
        Field(
            max_length=32,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        ),
    ] = []
    """Ready, Progressing, Degraded, DatabaseReady, MonitoringReady, TelemetryReady, Paused."""
    replica_summary: Annotated[str, Field(max_length=32)] = ""
    """`available/desired` API replicas, for display."""
    api: WorkloadSummary | None = None
    """The API Deployment."""
    workers: Annotated[list[WorkloadSummary], Field(max_length=16)] = []
    """Worker Deployments."""
    children: Annotated[list[ChildSummary], Field(max_length=64)] = []
    """Every managed child and its state."""
    max_connections: Annotated[int, Field(ge=0)] = 0
    """Database connections the spec can open at its autoscaling maximum."""


class ObjectMeta(BaseModel):
    """The part of metadata the operator reads; the rest is kept but not interpreted."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=253)]
    namespace: Annotated[str, Field(pattern=DNS_1123_LABEL, max_length=63)] = "default"
    generation: int = 0
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}


class BackendService(BaseModel):
    """A whole BackendService object."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    api_version: Literal["adbm.io/v1alpha1"] = Field("adbm.io/v1alpha1", alias="apiVersion")
    kind: Literal["BackendService"] = "BackendService"
    metadata: ObjectMeta
    spec: BackendServiceSpec
    status: BackendServiceStatus | None = None

    # Children are named after the object, and Services need DNS-1035 labels.
    root_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
            " && self.metadata.name.size() <= 63",
            message="metadata.name must be a DNS-1035 label (lower case letters, digits and '-',"
            " starting with a letter, at most 63 characters)",
            holds=lambda o: (
                re.fullmatch(DNS_LABEL, o.metadata.name) is not None and len(o.metadata.name) <= 63
            ),
        ),
    )

    @model_validator(mode="after")
    def _check_root_rules(self) -> Self:
        for rule in self.root_rules:
            if not rule.holds(self):
                raise ValueError(rule.message)
        return self

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace


def parse(body: dict[str, Any]) -> BackendService:
    """Validate a BackendService body (from the API server or a file)."""
    return BackendService.model_validate(body)


def with_defaults(obj: BackendService) -> dict[str, Any]:
    """The object as the API server stores it: every spec default applied. Metadata is echoed as
    given, since the operator does not own it."""
    body = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
    body["metadata"] = obj.metadata.model_dump(mode="json", exclude_unset=True)
    return body
