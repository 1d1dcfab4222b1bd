"""The cross-field rules of the BackendService API, each as CEL and as Python side by side.

The API server runs the CEL (the CRD carries it as `x-kubernetes-validations`); the operator and
`adbm-operator render` run the Python. Tests evaluate both on the same samples. Every CEL rule
guards the optional fields it selects with `has()`: the API server evaluates rules on defaults
as written, and a missing key is an error there, not false.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, Literal

from . import defaults
from .api import DNS_LABEL
from .base import Rule, or_default

# Suffixes of resource.Quantity (k8s.io/apimachinery/pkg/api/resource/suffix.go): binary
# ones are powers of 1024, decimal ones powers of 1000; an exponent (`1e3`) is Decimal's.
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -3, "u": -2, "m": -1, "k": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


def quantity_value(text: str) -> Decimal:
    """The value of a quantity the QUANTITY pattern accepted, in base units (cores, bytes).

    The same value as `kubernetes.utils.parse_quantity` (the tests compare them), without the
    `kubernetes` client package: importing it costs the operator ~25 MB of memory for this one
    function."""
    if text[-2:] in _BINARY:
        return Decimal(text[:-2]) * Decimal(1024) ** _BINARY[text[-2:]]
    if text[-1:] in _DECIMAL:
        return Decimal(text[:-1]) * Decimal(1000) ** _DECIMAL[text[-1:]]
    return Decimal(text)


def _not_above(requests: str | None, limits: str | None) -> bool:
    return requests is None or limits is None or quantity_value(requests) <= quantity_value(limits)


def _request_within_limit(resource: Literal["cpu", "memory"]) -> Rule:
    # Kubernetes CEL's quantity library compares quantities by value, as the Python side does.
    return Rule(
        cel=f"!has(self.requests) || !has(self.limits) || !has(self.requests.{resource})"
        f" || !has(self.limits.{resource})"
        f" || !quantity(self.requests.{resource}).isGreaterThan(quantity(self.limits.{resource}))",
        message=f"requests.{resource} must not exceed limits.{resource}",
        holds=lambda s: _not_above(getattr(s.requests, resource), getattr(s.limits, resource)),
    )


RESOURCES = (_request_within_limit("cpu"), _request_within_limit("memory"))

# An absent minReplicas is 1, which no maxReplicas (at least 1) is below.
AUTOSCALING = (
    Rule(
        cel="!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
        message="minReplicas must not exceed maxReplicas",
        holds=lambda s: s.min_replicas <= s.max_replicas,
    ),
)

WORKER_AUTOSCALING = (
    *AUTOSCALING,
    Rule(
        cel="(has(self.scaler) && self.scaler == 'QueueLength') || !has(self.minReplicas)"
        " || self.minReplicas >= 1",
        message="minReplicas 0 needs scaler QueueLength: a HorizontalPodAutoscaler "
        "cannot scale to zero",
        holds=lambda s: s.scaler == "QueueLength" or s.min_replicas >= 1,
    ),
)

POOL = (
    Rule(
        cel="!has(self.minSize) || self.minSize <= "
        + or_default("self", "maxSize", defaults.POOL_MAX_SIZE),
        message="pool.minSize must not exceed pool.maxSize",
        holds=lambda s: s.min_size <= s.max_size,
    ),
)

ROW_LEVEL_SECURITY = (
    Rule(
        cel="!has(self.tables) || self.tables.all(t, self.tables.exists_one(u, u == t))",
        message="rowLevelSecurity.tables must not repeat a table",
        holds=lambda s: len(set(s.tables)) == len(s.tables),
    ),
)

_METHOD = {name: or_default(name, "method", defaults.ANY_METHOD) for name in ("o", "r")}
RATE_LIMIT = (
    Rule(
        cel="!has(self.routes) || self.routes.all(r, self.routes.exists_one(o,"
        f" {_METHOD['o']} == {_METHOD['r']} && o.path == r.path))",
        message="rateLimit.routes must not repeat a method and path",
        holds=lambda s: len({(r.method, r.path) for r in s.routes}) == len(s.routes),
    ),
)

DEPRECATED_VERSION = (
    Rule(
        cel="timestamp(self.sunsetAt) >= timestamp(self.deprecatedAt)",
        message="sunsetAt must not be before deprecatedAt",
        holds=lambda s: s.sunset_at >= s.deprecated_at,
    ),
)

VERSIONING = (
    Rule(
        cel="!has(self.deprecated) || !self.deprecated.exists(d, d.version == "
        + or_default("self", "current", defaults.CURRENT_API_VERSION)
        + ")",
        message="the current version cannot be deprecated",
        holds=lambda s: all(d.version != s.current for d in s.deprecated),
    ),
    Rule(
        cel="!has(self.deprecated)"
        " || self.deprecated.all(d, self.deprecated.exists_one(e, e.version == d.version))",
        message="versioning.deprecated must not repeat a version",
        holds=lambda s: len({d.version for d in s.deprecated}) == len(s.deprecated),
    ),
)


def _keeps_a_replica(worker: Any) -> bool:
    if worker.autoscaling is not None:
        return bool(worker.autoscaling.min_replicas >= 1)
    return bool(worker.replicas >= 1)


# The outbox relay runs inside every worker process: when there are worker groups, one must
# never scale to zero, or nothing would publish what the API writes to the outbox (not even
# the messages that would wake a group scaled to zero by its queue's length). A queue with no
# worker group at all is left to workers deployed elsewhere.
_KEEPS_A_REPLICA = (
    "(has(w.autoscaling) ? "
    + or_default("w.autoscaling", "minReplicas", defaults.MIN_REPLICAS)
    + " : "
    + or_default("w", "replicas", defaults.WORKER_REPLICAS)
    + ") >= 1"
)
QUEUE = (
    Rule(
        cel="!has(self.workers)"
        " || self.workers.all(w, self.workers.exists_one(o, o.name == w.name))",
        message="queue.workers must not repeat a name",
        holds=lambda s: len({w.name for w in s.workers}) == len(s.workers),
    ),
    Rule(
        cel="!has(self.workers) || self.workers.size() == 0"
        f" || self.workers.exists(w, {_KEEPS_A_REPLICA})",
        message="queue.workers needs a group that never scales to zero: the outbox relay runs"
        " in the workers, and with none running nothing is published",
        holds=lambda s: not s.workers or any(_keeps_a_replica(w) for w in s.workers),
    ),
)

OTEL_COLLECTOR = (
    Rule(
        cel="(has(self.enabled) && !self.enabled) || has(self.endpoint)",
        message="otelCollector.endpoint is required when the collector sidecar is enabled;"
        " set it, or set enabled: false",
        holds=lambda s: not s.enabled or s.endpoint is not None,
    ),
)

SERVICE_MONITOR = (
    Rule(
        cel="!has(self.interval) || self.interval.matches('[1-9]')",
        message="serviceMonitor.interval must not be zero",
        holds=lambda s: re.search("[1-9]", s.interval) is not None,
    ),
)


def budget_message(spec: Any) -> str:
    """The connection-budget error with its numbers, so the user sees what to change."""
    db = spec.database
    api, workers = defaults.api_max_replicas(spec), defaults.worker_max_replicas(spec)
    return (
        f"API and worker replicas at their autoscaling maximum ({api} + {workers})"
        f" \u00d7 pool.maxSize {db.pool.max_size} = {defaults.max_connections(spec)} connections"
        f" exceed database.connectionBudget {db.connection_budget}"
    )


_API_REPLICAS = "(has(self.autoscaling) ? self.autoscaling.maxReplicas : {})".format(
    or_default("self", "replicas", defaults.API_REPLICAS)
)
_WORKER_REPLICAS = (
    "(has(self.queue) && has(self.queue.workers) ? self.queue.workers.map(w,"
    " has(w.autoscaling) ? w.autoscaling.maxReplicas : "
    + or_default("w", "replicas", defaults.WORKER_REPLICAS)
    + ").sum() : 0)"
)
_POOL_MAX_SIZE = (
    "(has(self.database.pool) && has(self.database.pool.maxSize)"
    f" ? self.database.pool.maxSize : {defaults.POOL_MAX_SIZE})"
)
# Kubernetes CEL has `sum()` on lists of numbers (its list library); the API server rejects
# the spec before the operator sees it.
BACKEND_SERVICE_SPEC = (
    Rule(
        cel=f"({_API_REPLICAS} + {_WORKER_REPLICAS}) * {_POOL_MAX_SIZE} <= "
        + or_default("self.database", "connectionBudget", defaults.CONNECTION_BUDGET),
        message="API and worker replicas at their autoscaling maximum, times"
        " database.pool.maxSize, exceed database.connectionBudget",
        holds=lambda s: defaults.max_connections(s) <= s.database.connection_budget,
        explain=budget_message,
    ),
)

# Children are named after the object, and Services need DNS-1035 labels. The API server sets
# metadata.name before it validates, but a rule never relies on a field being there.
BACKEND_SERVICE = (
    Rule(
        cel="!has(self.metadata) || !has(self.metadata.name)"
        " || (self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')"
        " && self.metadata.name.size() <= 63)",
        message="metadata.name must be a DNS-1035 label (lower case letters, digits and '-',"
        " starting with a letter, at most 63 characters)",
        holds=lambda o: (
            re.fullmatch(DNS_LABEL, o.metadata.name) is not None and len(o.metadata.name) <= 63
        ),
    ),
)
