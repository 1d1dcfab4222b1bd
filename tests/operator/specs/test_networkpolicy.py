"""NetworkPolicies: API pods take HTTP and metrics, worker pods only metrics, nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from adbm_operator import model
from adbm_operator.specs import configmap, deployment, labels, networkpolicy, pod
from tests.operator.specs.support import assert_valid, example


def selects(policy: dict[str, Any], pod_labels: Mapping[str, str]) -> bool:
    selector: dict[str, Any] = policy["spec"]["podSelector"]
    assert set(selector) == {"matchLabels"}
    return bool(selector["matchLabels"].items() <= pod_labels.items())


def admitted_ports(policy: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for rule in policy["spec"]["ingress"] for p in rule["ports"]}


def worker_pod_labels(obj: model.BackendService) -> list[dict[str, str]]:
    assert obj.spec.queue is not None
    return [labels.labels(obj, "worker", group.name) for group in obj.spec.queue.workers]


NO_WORKERS: dict[str, Any] = {"spec.queue.workers": []}


@pytest.mark.parametrize("name", ["minimal", "full"])
def test_policies_are_valid_kubernetes_objects(name: str) -> None:
    for policy in networkpolicy.build_all(example(name)):
        assert_valid(policy)


@pytest.mark.parametrize(
    ("obj", "count"),
    [(example("minimal"), 1), (example("full", NO_WORKERS), 1), (example("full"), 2)],
    ids=["no-queue", "queue-without-workers", "workers"],
)
def test_worker_policy_only_when_there_are_workers(obj: model.BackendService, count: int) -> None:
    policies = networkpolicy.build_all(obj)
    assert len(policies) == count
    assert policies[0] == networkpolicy.build(obj)
    assert len({p["metadata"]["name"] for p in policies}) == count


def test_api_policy_restricts_ingress_only() -> None:
    spec = networkpolicy.build(example("minimal"))["spec"]
    # Egress stays open: databases, brokers and collectors live at addresses we do not know.
    assert spec["policyTypes"] == ["Ingress"]
    # No `from`: any peer, but only on the listed ports.
    assert all(set(rule) == {"ports"} for rule in spec["ingress"])


def test_api_policy_admits_exactly_http_and_metrics() -> None:
    obj = example("minimal")
    policy = networkpolicy.build(obj)
    assert admitted_ports(policy) == {("TCP", 8000), ("TCP", 9090)}
    containers = deployment.build(obj)["spec"]["template"]["spec"]["containers"]
    (app,) = [c for c in containers if c["name"] == pod.APP_CONTAINER]
    assert admitted_ports(policy) == {(p["protocol"], p["containerPort"]) for p in app["ports"]}


def test_api_policy_selects_the_api_pods_and_no_worker() -> None:
    obj = example("full")
    policy = networkpolicy.build(obj)
    assert selects(policy, deployment.build(obj)["spec"]["template"]["metadata"]["labels"])
    for pod_labels in worker_pod_labels(obj):
        assert not selects(policy, pod_labels)


def test_worker_policy_selects_every_worker_group_and_not_the_api() -> None:
    obj = example("full")
    _, workers = networkpolicy.build_all(obj)
    for pod_labels in worker_pod_labels(obj):
        assert selects(workers, pod_labels)
    assert not selects(workers, labels.labels(obj, "api"))


def test_worker_policy_admits_metrics_only() -> None:
    _, workers = networkpolicy.build_all(example("full"))
    assert workers["spec"]["policyTypes"] == ["Ingress"]
    assert admitted_ports(workers) == {("TCP", configmap.METRICS_PORT)}
