"""NetworkPolicies that admit traffic only to the ports the pods serve.

Ingress only: egress goes to databases, Redis, RabbitMQ and collectors at addresses the operator
does not know, so restricting it would need cluster-specific input.
"""

from __future__ import annotations

from typing import Any

from adbm_operator.model import BackendService
from adbm_operator.specs import configmap, deployment, labels

WORKER_COMPONENT = "worker"


def _tcp(*ports: int) -> list[dict[str, Any]]:
    # Port numbers, not names: a named port admits whichever container port carries that name,
    # and these policies must not depend on how another builder names its ports.
    return [{"protocol": "TCP", "port": port} for port in ports]


def _policy(
    obj: BackendService, name: str, component: str, selector: dict[str, str], ports: list[int]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": labels.metadata(obj, name, component),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            # No `from`: any source may connect, but only to these ports.
            "ingress": [{"ports": _tcp(*ports)}],
        },
    }


def build(obj: BackendService) -> dict[str, Any]:
    """The API pods: HTTP and metrics."""
    return _policy(
        obj,
        deployment.name(obj),
        deployment.COMPONENT,
        labels.selector_labels(obj, deployment.COMPONENT),
        [configmap.HTTP_PORT, configmap.METRICS_PORT],
    )


def build_workers(obj: BackendService) -> dict[str, Any]:
    """Every worker group's pods: metrics only, since workers take their work from the queue."""
    return _policy(
        obj,
        labels.child_name(obj, "workers"),
        WORKER_COMPONENT,
        # No group label: one policy covers all groups, present and future.
        labels.selector_labels(obj, WORKER_COMPONENT),
        [configmap.METRICS_PORT],
    )


def build_all(obj: BackendService) -> list[dict[str, Any]]:
    policies = [build(obj)]
    if obj.spec.queue is not None and obj.spec.queue.workers:
        policies.append(build_workers(obj))
    return policies
