"""HorizontalPodAutoscalers: target one Deployment by name, within the spec's bounds, on CPU."""

from __future__ import annotations

from typing import Any

import pytest

from adbm_operator import model
from adbm_operator.specs import hpa, labels
from tests.operator.specs.support import assert_valid, example


def api_hpa(obj: model.BackendService) -> dict[str, Any]:
    assert obj.spec.autoscaling is not None
    return hpa.build(
        obj, deployment="payments-api", autoscaling=obj.spec.autoscaling, component="api"
    )


def test_hpa_is_a_valid_kubernetes_object() -> None:
    assert_valid(api_hpa(example("full")))


def test_hpa_targets_its_deployment_by_name() -> None:
    obj = example("full")
    autoscaler = api_hpa(obj)
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "payments-api",
    }
    # Named like its Deployment, so each Deployment has at most one autoscaler.
    assert autoscaler["metadata"]["name"] == "payments-api"
    assert autoscaler["metadata"]["namespace"] == obj.namespace
    assert autoscaler["metadata"]["labels"] == labels.labels(obj, "api")


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"maxReplicas": 4}, (1, 4, 70)),
        ({"minReplicas": 3, "maxReplicas": 10, "targetCpuUtilizationPercentage": 65}, (3, 10, 65)),
        ({"minReplicas": 5, "maxReplicas": 5}, (5, 5, 70)),
    ],
)
def test_hpa_takes_its_bounds_from_the_spec(
    bounds: dict[str, int], expected: tuple[int, int, int]
) -> None:
    obj = example("minimal", {"spec.autoscaling": bounds})
    spec = api_hpa(obj)["spec"]
    (metric,) = spec["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    target = metric["resource"]["target"]["averageUtilization"]
    assert (spec["minReplicas"], spec["maxReplicas"], target) == expected


def test_hpa_scales_down_slowly_and_up_at_once() -> None:
    behavior = api_hpa(example("full"))["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 60
    # No scaleUp override: the Kubernetes default reacts to load immediately.
    assert "scaleUp" not in behavior


def test_worker_hpa_carries_the_group_label() -> None:
    obj = example("full")
    group = model.WorkerGroup(name="orders", queues=["q"])
    bounds = model.WorkerAutoscaling(min_replicas=1, max_replicas=3)
    autoscaler = hpa.build(
        obj,
        deployment="payments-worker-orders",
        autoscaling=bounds,
        component="worker",
        group="orders",
    )
    assert autoscaler["metadata"]["labels"] == labels.labels(obj, "worker", group.name)
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "payments-worker-orders"
    assert_valid(autoscaler)
