"""Operator metrics (Prometheus) and JSON logs.

Metrics follow Prometheus naming (`_total`, `_seconds`). Logs are the service's JSON lines
(`reference_service.observability.logging`: one schema for every ADBM process): handlers log
through the object-bound logger Kopf passes them, so every line about an object names it under
`object`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from reference_service.observability import logging as service_logging

RECONCILES = Counter(
    "adbm_operator_reconcile_total", "Reconciles of BackendServices, by result.", ["result"]
)
RECONCILE_SECONDS = Histogram(
    "adbm_operator_reconcile_duration_seconds",
    "Duration of one reconcile, by result.",
    ["result"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CHILDREN_APPLIED = Counter(
    "adbm_operator_children_applied_total", "Children server-side applied, by kind.", ["kind"]
)
DRIFT_CORRECTIONS = Counter(
    "adbm_operator_drift_corrections_total",
    "Children re-applied because someone changed or deleted them, by kind.",
    ["kind"],
)
LAST_SUCCESS = Gauge(
    "adbm_operator_last_success_timestamp_seconds",
    "Unix time of the last reconcile that finished without error.",
)


def serve_metrics(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address)


def configure_logging(verbose: bool = False) -> None:
    """JSON lines; records about an object carry it under `object` (namespace, name, uid)."""
    service_logging.configure("DEBUG" if verbose else "INFO")
