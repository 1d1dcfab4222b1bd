"""Prometheus metrics of the service's processes, served on a listener of their own.

Every metric of the service is declared here, once, so the README's table and `promtool check
metrics` have one place to look. Labels are bounded: route templates (never raw paths or ids),
status classes, queue names from the deployment, and small enums of outcomes.

The listener (`serve`) runs on `ADBM_METRICS_PORT`, apart from the API port, so the
ServiceMonitor and the NetworkPolicy the operator renders can treat it separately, and a
saturated API still answers scrapes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Final, Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Requests ------------------------------------------------------------------------------------

REQUESTS: Final = Counter(
    "adbm_http_requests_total",
    "HTTP requests answered, by route template, method and status class.",
    ["route", "method", "status_class"],
)
REQUEST_SECONDS: Final = Histogram(
    "adbm_http_request_duration_seconds",
    "Time from a request's first byte to its response's last, by route template, method and "
    "status class.",
    ["route", "method", "status_class"],
    # Finer below the manifesto's 200 ms p95 target, where the decisions are made.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0),
)
PROBLEMS: Final = Counter(
    "adbm_http_problems_total",
    "Error responses (problem+json), by problem type and status.",
    ["problem", "status"],
)

# Rate limits and idempotency -----------------------------------------------------------------

RATE_LIMIT_DECISIONS: Final = Counter(
    "adbm_ratelimit_decisions_total",
    "Rate-limit decisions, by decision (admitted, limited) and by who decided (redis, or the "
    "per-process fallback while Redis is unavailable).",
    ["decision", "source"],
)
IDEMPOTENCY_OUTCOMES: Final = Counter(
    "adbm_idempotency_outcomes_total",
    "Idempotent writes, by outcome: new, replayed, in_flight, mismatch, unavailable.",
    ["outcome"],
)

# Cache ---------------------------------------------------------------------------------------

CACHE_LOOKUPS: Final = Counter(
    "adbm_cache_lookups_total",
    "Read-through cache lookups, by result: hit, negative_hit (a cached absence), miss, stale "
    "(served while another request rebuilds), filtered (refused by the Bloom filter).",
    ["cache", "result"],
)
CACHE_STAMPEDE_WAITS: Final = Counter(
    "adbm_cache_stampede_waits_total",
    "Requests that waited for another request's rebuild of the same key.",
    ["cache"],
)

# Outbox, messages, sagas ---------------------------------------------------------------------

OUTBOX_PUBLISHED: Final = Counter(
    "adbm_outbox_published_total",
    "Outbox messages published to RabbitMQ, confirmed by the broker and marked published, by "
    "queue (the logical name, without the deployment's prefix).",
    ["queue"],
)
OUTBOX_LAG_SECONDS: Final = Gauge(
    "adbm_outbox_lag_seconds",
    "Age of the oldest outbox message this relay claimed on its last pass, by the database's "
    "clock (0 when none was waiting).",
)
MESSAGES_CONSUMED: Final = Counter(
    "adbm_messages_consumed_total",
    "Deliveries handled, by queue (logical name) and result: acked (applied), duplicate "
    "(applied before, acked), retried (sent to the delay queue), dead_lettered, requeued (never "
    "acked: cancelled at shutdown or the ack was lost; the broker delivers it again).",
    ["queue", "result"],
)
SAGA_OUTCOMES: Final = Counter(
    "adbm_saga_outcomes_total",
    "Sagas that reached a terminal state, by saga and state (confirmed, cancelled).",
    ["saga", "state"],
)
SAGA_COMPENSATIONS: Final = Counter(
    "adbm_saga_compensations_total",
    "Compensating steps that ran, by saga and step (refund, release, cancel).",
    ["saga", "step"],
)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


# The database pool: read at scrape time, never copied into gauges on the hot path. -----------


class PoolStats(Protocol):
    """What the collector reads of a pool (`reference_service.db.pool.Database` has it)."""

    name: str

    def pool_stats(self) -> dict[str, int]: ...


class _PoolCollector(Collector):
    def __init__(self) -> None:
        self._pools: weakref.WeakSet[PoolStats] = weakref.WeakSet()

    def watch(self, pool: PoolStats) -> None:
        self._pools.add(pool)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        size = GaugeMetricFamily(
            "adbm_db_pool_connections",
            "Connections the pool holds, open or opening.",
            labels=["pool"],
        )
        in_use = GaugeMetricFamily(
            "adbm_db_pool_connections_in_use", "Connections lent to requests.", labels=["pool"]
        )
        waiting = GaugeMetricFamily(
            "adbm_db_pool_requests_waiting", "Requests waiting for a connection.", labels=["pool"]
        )
        limit = GaugeMetricFamily(
            "adbm_db_pool_max_connections", "The pool's maximum size.", labels=["pool"]
        )
        timeouts = CounterMetricFamily(
            "adbm_db_pool_acquire_timeouts",
            "Requests that gave up waiting for a connection (answered 503).",
            labels=["pool"],
        )
        for pool in list(self._pools):
            stats = pool.pool_stats()
            size.add_metric([pool.name], stats["size"])
            in_use.add_metric([pool.name], stats["in_use"])
            waiting.add_metric([pool.name], stats["waiting"])
            limit.add_metric([pool.name], stats["max_size"])
            timeouts.add_metric([pool.name], stats["acquire_timeouts"])
        yield from (size, in_use, waiting, limit, timeouts)


POOLS: Final = _PoolCollector()
REGISTRY.register(POOLS)


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Start the metrics listener (a thread of its own) on `port`."""
    start_http_server(port, addr=address)
