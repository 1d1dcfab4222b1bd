"""The API's PodDisruptionBudget: voluntary disruptions (node drains) take one pod at a time."""

from __future__ import annotations

from typing import Any

from adbm_operator.model import BackendService
from adbm_operator.specs import deployment, labels


def build(obj: BackendService) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": labels.metadata(obj, deployment.name(obj), deployment.COMPONENT),
        "spec": {
            "selector": {"matchLabels": labels.selector_labels(obj, deployment.COMPONENT)},
            # maxUnavailable rather than minAvailable: at one replica, minAvailable 1 would
            # forbid every eviction and block node drains forever.
            "maxUnavailable": 1,
            # A pod that is not ready serves nothing, so evicting it costs nothing; without
            # this, a crash-looping pod would block drains.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
