"""The API Service: reachable at `<name>.<namespace>.svc`, routing only to API pods by port name."""

from __future__ import annotations

from typing import Any

import pytest

from adbm_operator.specs import deployment, labels, pod, service
from tests.operator.specs.support import assert_valid, example


def app_container(dep: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = dep["spec"]["template"]["spec"]["containers"]
    (container,) = [c for c in containers if c["name"] == pod.APP_CONTAINER]
    return container


@pytest.mark.parametrize("name", ["minimal", "full"])
def test_service_is_a_valid_kubernetes_object(name: str) -> None:
    assert_valid(service.build(example(name)))


def test_service_is_named_after_the_backendservice() -> None:
    obj = example("full")
    svc = service.build(obj)
    assert svc["metadata"]["name"] == obj.name
    assert svc["metadata"]["namespace"] == obj.namespace
    assert svc["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("name", ["minimal", "full"])
def test_service_routes_to_the_api_pods(name: str) -> None:
    obj = example(name)
    selector = service.build(obj)["spec"]["selector"]
    dep = deployment.build(obj)
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert selector == dep["spec"]["selector"]["matchLabels"]


def test_service_does_not_route_to_workers() -> None:
    obj = example("full")
    selector = service.build(obj)["spec"]["selector"]
    assert obj.spec.queue is not None
    for group in obj.spec.queue.workers:
        assert not selector.items() <= labels.labels(obj, "worker", group.name).items()


def test_service_ports_are_http_and_metrics() -> None:
    ports = {p["name"]: p for p in service.build(example("minimal"))["spec"]["ports"]}
    assert set(ports) == {"http", "metrics"}
    assert ports["http"]["port"] == 80
    assert ports["metrics"]["port"] == 9090
    for port in ports.values():
        assert port["protocol"] == "TCP"
        assert port["appProtocol"] == "http"


def test_service_target_ports_are_the_container_port_names() -> None:
    obj = example("minimal")
    container_ports = {p["name"] for p in app_container(deployment.build(obj))["ports"]}
    for port in service.build(obj)["spec"]["ports"]:
        # By name, and the same name: the Service follows the container if its number moves.
        assert port["targetPort"] == port["name"]
        assert port["targetPort"] in container_ports
