"""The prometheus-operator ServiceMonitor (monitoring.coreos.com/v1) for the API's metrics port.

It selects the API Service by its selector labels and scrapes the named `metrics` port, so
Prometheus follows the Service's endpoints as pods come and go. Prometheus picks ServiceMonitors
by label (e.g. `release: kube-prometheus-stack`), which is what the user's extra labels are for.
"""

from __future__ import annotations

import re
from typing import Any

from adbm_operator.model import BackendService
from adbm_operator.specs import deployment, labels

API_VERSION = "monitoring.coreos.com/v1"
METRICS_PATH = "/metrics"
# Prometheus' own default; a scrape that takes longer than this is a problem worth seeing as a
# failed scrape rather than a slow one.
MAX_SCRAPE_TIMEOUT = "10s"
# Label keys under these prefixes describe the object for Kubernetes tooling and for the operator
# itself (ownership, selectors); a user label must not be able to change or forge them.
RESERVED_LABEL_PREFIXES = ("app.kubernetes.io/", "adbm.io/")

_DURATION = re.compile(
    r"^(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$"
)
_UNIT_MS = (
    365 * 24 * 3_600_000,
    7 * 24 * 3_600_000,
    24 * 3_600_000,
    3_600_000,
    60_000,
    1_000,
    1,
)


def duration_ms(duration: str) -> int:
    """Milliseconds in a Prometheus duration (`1h30m`, `15s`, `500ms`)."""
    match = _DURATION.match(duration)
    if match is None:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(v) * unit for v, unit in zip(match.groups(), _UNIT_MS, strict=True) if v)


def name(obj: BackendService) -> str:
    return labels.child_name(obj, deployment.COMPONENT)


def object_labels(obj: BackendService) -> dict[str, str]:
    """The user's labels, except under reserved prefixes, then ours."""
    user = {
        key: value
        for key, value in obj.spec.observability.service_monitor.labels.items()
        if not key.startswith(RESERVED_LABEL_PREFIXES)
    }
    return {**user, **labels.labels(obj, deployment.COMPONENT)}


def endpoint(obj: BackendService) -> dict[str, Any]:
    """The scrape endpoint. The timeout never exceeds the interval, which prometheus-operator
    requires (the model rejects a zero interval)."""
    interval = obj.spec.observability.service_monitor.interval
    ep: dict[str, Any] = {"port": deployment.METRICS_PORT_NAME, "path": METRICS_PATH}
    ep["interval"] = interval
    fits = duration_ms(interval) <= duration_ms(MAX_SCRAPE_TIMEOUT)
    ep["scrapeTimeout"] = interval if fits else MAX_SCRAPE_TIMEOUT
    # The service's own labels (e.g. `tenant`) must not replace the target labels Prometheus
    # attaches (namespace, pod, service): dashboards and alerts rely on those.
    ep["honorLabels"] = False
    return ep


def build(obj: BackendService) -> dict[str, Any] | None:
    """The ServiceMonitor, or None when monitoring is disabled."""
    if not obj.spec.observability.service_monitor.enabled:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": "ServiceMonitor",
        "metadata": {"name": name(obj), "namespace": obj.namespace, "labels": object_labels(obj)},
        "spec": {
            "selector": {"matchLabels": labels.selector_labels(obj, deployment.COMPONENT)},
            "namespaceSelector": {"matchNames": [obj.namespace]},
            "endpoints": [endpoint(obj)],
        },
    }
