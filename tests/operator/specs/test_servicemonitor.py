"""The ServiceMonitor: when it exists, what it selects, how it scrapes, and that the
prometheus-operator CRD accepts it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from adbm_operator import model
from adbm_operator.specs import deployment, labels, render, service, servicemonitor
from tests.operator.validation import validate

Make = Callable[..., model.BackendService]


def test_rendered_by_default(minimal: model.BackendService) -> None:
    sm = servicemonitor.build(minimal)
    assert sm is not None
    assert (sm["apiVersion"], sm["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    assert sm["metadata"]["name"] == "shop-api"
    assert sm["metadata"]["namespace"] == "shop"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["shop"]}
    assert sm in render(minimal)


def test_absent_when_disabled(make: Make) -> None:
    obj = make("full", spec__observability__serviceMonitor={"enabled": False})
    assert servicemonitor.build(obj) is None
    assert all(child["kind"] != "ServiceMonitor" for child in render(obj))


def test_named_like_the_api_deployment_even_when_truncated(make: Make) -> None:
    obj = make("minimal", metadata__name="a" * 63)
    sm = servicemonitor.build(obj)
    assert sm is not None
    assert sm["metadata"]["name"] == deployment.name(obj)
    assert len(sm["metadata"]["name"]) <= 63


def test_user_labels_are_added(full: model.BackendService) -> None:
    sm = servicemonitor.build(full)
    assert sm is not None
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert labels.labels(full, "api").items() <= sm["metadata"]["labels"].items()


def test_user_labels_cannot_override_or_forge_reserved_keys(make: Make) -> None:
    obj = make(
        "minimal",
        spec__observability__serviceMonitor={
            "labels": {
                "app.kubernetes.io/name": "spoofed",
                "app.kubernetes.io/instance": "someone-else",
                "app.kubernetes.io/version": "9.9",
                "adbm.io/backendservice": "someone-else",
                "adbm.io/anything": "x",
                "release": "prom",
            }
        },
    )
    sm = servicemonitor.build(obj)
    assert sm is not None
    assert sm["metadata"]["labels"] == {**labels.labels(obj, "api"), "release": "prom"}


def test_selector_matches_the_api_service_only(make: Make) -> None:
    obj = make(
        "full",
        spec__queue__workers=[{"name": "orders", "queues": ["orders"]}],
    )
    sm = servicemonitor.build(obj)
    assert sm is not None
    selector = sm["spec"]["selector"]["matchLabels"]
    assert selector == labels.selector_labels(obj, "api")
    svc = service.build(obj)
    assert selector.items() <= svc["metadata"]["labels"].items()
    others = [c for c in render(obj) if c["kind"] == "Service" and c != svc]
    for other in others:
        assert not selector.items() <= other["metadata"]["labels"].items()


def test_scrapes_the_metrics_port_the_service_exposes(full: model.BackendService) -> None:
    sm = servicemonitor.build(full)
    assert sm is not None
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    assert endpoint["honorLabels"] is False
    service_ports = {p["name"] for p in service.build(full)["spec"]["ports"]}
    container_ports = {p["name"] for p in deployment.ports()}
    assert endpoint["port"] in service_ports & container_ports


@pytest.mark.parametrize(
    ("interval", "timeout"),
    [
        ("30s", "10s"),
        ("15s", "10s"),
        ("10s", "10s"),
        ("5s", "5s"),
        ("500ms", "500ms"),
        ("1s500ms", "1s500ms"),
        ("9s999ms", "9s999ms"),
        ("10s1ms", "10s"),
        ("1m", "10s"),
        ("2h", "10s"),
        ("1y", "10s"),
    ],
)
def test_interval_from_spec_and_timeout_never_above_it(
    make: Make, interval: str, timeout: str
) -> None:
    obj = make("minimal", spec__observability__serviceMonitor={"interval": interval})
    sm = servicemonitor.build(obj)
    assert sm is not None
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["interval"] == interval
    assert endpoint["scrapeTimeout"] == timeout
    assert servicemonitor.duration_ms(timeout) <= servicemonitor.duration_ms(interval)
    validate(sm)


@pytest.mark.parametrize("interval", ["0", "0s", "0m0s", ""])
def test_zero_interval_is_rejected_by_the_model(make: Make, interval: str) -> None:
    # A zero interval would silently fall back to Prometheus' global default.
    with pytest.raises(ValueError, match="interval"):
        make("minimal", spec__observability__serviceMonitor={"interval": interval})


@pytest.mark.parametrize(
    ("duration", "ms"),
    [
        ("250ms", 250),
        ("15s", 15_000),
        ("1m30s", 90_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        ("1w", 604_800_000),
        ("1y", 31_536_000_000),
        ("1h2m3s4ms", 3_723_004),
    ],
)
def test_duration_ms(duration: str, ms: int) -> None:
    assert servicemonitor.duration_ms(duration) == ms


@pytest.mark.parametrize("bad", ["15", "1.5s", "s", "1m1h", "-1s"])
def test_duration_ms_rejects_non_durations(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        servicemonitor.duration_ms(bad)


@pytest.mark.parametrize("example", ["minimal", "full"])
def test_validates_against_the_prometheus_operator_crd(
    example: str, make: Make, full: model.BackendService
) -> None:
    obj = make(
        example,
        spec__observability__serviceMonitor={"labels": {"release": "kube-prometheus-stack"}},
    )
    for candidate in (obj, full):
        sm = servicemonitor.build(candidate)
        assert sm is not None
        validate(sm)


def test_crd_schema_catches_a_misspelt_field(full: model.BackendService) -> None:
    sm = servicemonitor.build(full)
    assert sm is not None
    sm["spec"]["endpoints"][0]["scrapeTimout"] = "5s"
    with pytest.raises(AssertionError, match="scrapeTimout"):
        validate(sm)
