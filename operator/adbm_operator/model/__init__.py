"""The BackendService API: the single source of truth for its spec, status and validation.

Split the way Knative splits an API: `api` (names and value formats), `spec` and `status` (the
types, with their fields' bounds and defaults), `validation` (the cross-field rules, as CEL for
the API server and Python for offline use, side by side), `defaults` (default values and the
values computed from an object) and `resource` (the whole object). This package imports nothing
else of the operator; callers use `from adbm_operator import model` and the names below.
"""

from __future__ import annotations

from . import defaults, validation
from .api import (
    API_VERSION,
    API_VERSION_NAME,
    DNS_1123_LABEL,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    GROUP,
    KIND,
    LABEL_KEY,
    LABEL_VALUE,
    PG_CUSTOM_SETTING,
    PLURAL,
    PROM_DURATION,
    QUANTITY,
    SECRET_KEY,
    SHORT_NAMES,
    SINGULAR,
    SQL_IDENTIFIER,
    VERSION,
)
from .base import (
    ApiModel,
    Rule,
)
from .defaults import (
    app_role,
    max_connections,
    redis_key_prefix,
    with_computed_defaults,
    with_defaults,
)
from .resource import (
    BackendService,
    ObjectMeta,
    parse,
)
from .spec import (
    Autoscaling,
    BackendServiceSpec,
    Database,
    DeletionPolicy,
    DeprecatedVersion,
    HttpMethod,
    Idempotency,
    LogLevel,
    Observability,
    OtelCollector,
    OtlpProtocol,
    Pool,
    Queue,
    RateLimit,
    RateLimitAlgorithm,
    RateLimitScope,
    RateQuota,
    Redis,
    RedisUnavailable,
    ResourceList,
    Resources,
    RouteRateLimit,
    RowLevelSecurity,
    SecretKeyRef,
    ServiceMonitorSpec,
    Tracing,
    Versioning,
    WorkerAutoscaling,
    WorkerGroup,
    WorkerScaler,
)
from .status import (
    BackendServiceStatus,
    ChildSummary,
    Condition,
    ConditionStatus,
    WorkloadSummary,
)
from .validation import quantity_value

DEFAULT_IMAGE = defaults.IMAGE
DEFAULT_COLLECTOR_IMAGE = defaults.COLLECTOR_IMAGE
DEFAULT_RLS_TABLES = defaults.RLS_TABLES

__all__ = [
    "API_VERSION",
    "API_VERSION_NAME",
    "DEFAULT_COLLECTOR_IMAGE",
    "DEFAULT_IMAGE",
    "DEFAULT_RLS_TABLES",
    "DNS_1123_LABEL",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "GROUP",
    "KIND",
    "LABEL_KEY",
    "LABEL_VALUE",
    "PG_CUSTOM_SETTING",
    "PLURAL",
    "PROM_DURATION",
    "QUANTITY",
    "SECRET_KEY",
    "SHORT_NAMES",
    "SINGULAR",
    "SQL_IDENTIFIER",
    "VERSION",
    "ApiModel",
    "Autoscaling",
    "BackendService",
    "BackendServiceSpec",
    "BackendServiceStatus",
    "ChildSummary",
    "Condition",
    "ConditionStatus",
    "Database",
    "DeletionPolicy",
    "DeprecatedVersion",
    "HttpMethod",
    "Idempotency",
    "LogLevel",
    "ObjectMeta",
    "Observability",
    "OtelCollector",
    "OtlpProtocol",
    "Pool",
    "Queue",
    "RateLimit",
    "RateLimitAlgorithm",
    "RateLimitScope",
    "RateQuota",
    "Redis",
    "RedisUnavailable",
    "ResourceList",
    "Resources",
    "RouteRateLimit",
    "RowLevelSecurity",
    "Rule",
    "SecretKeyRef",
    "ServiceMonitorSpec",
    "Tracing",
    "Versioning",
    "WorkerAutoscaling",
    "WorkerGroup",
    "WorkerScaler",
    "WorkloadSummary",
    "app_role",
    "defaults",
    "max_connections",
    "parse",
    "quantity_value",
    "redis_key_prefix",
    "validation",
    "with_computed_defaults",
    "with_defaults",
]
