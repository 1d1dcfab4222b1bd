"""HorizontalPodAutoscalers (autoscaling/v2) on CPU, for the API and for CPU-scaled workers."""

from __future__ import annotations

from typing import Any

from adbm_operator.model import Autoscaling, BackendService
from adbm_operator.specs import labels

# Scale up at once, scale down slowly: a brief lull must not drop warm replicas. KEDA's
# ScaledObjects pass the same behaviour to the HPA they create.
BEHAVIOR: dict[str, Any] = {
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
    }
}


def build(
    obj: BackendService,
    *,
    deployment: str,
    autoscaling: Autoscaling,
    component: str,
    group: str | None = None,
) -> dict[str, Any]:
    """An HPA for one Deployment, named like it. The Deployment renders no `replicas` then, so
    the operator and the autoscaler never write the same field."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": labels.metadata(obj, deployment, component, group),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
            "behavior": BEHAVIOR,
        },
    }
