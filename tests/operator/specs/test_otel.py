"""The collector sidecar and its configuration."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from adbm_operator import model
from adbm_operator.specs import otel
from tests.operator.specs.support import variant


def config_of(obj: model.BackendService) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(otel.collector_config(obj))
    return loaded


def test_absent_when_disabled() -> None:
    obj = variant("minimal", spec__observability__otelCollector={"enabled": False})
    assert otel.configmap_object(obj) is None
    assert otel.checksum(obj) is None


def test_pipeline_receives_locally_limits_memory_first_and_exports_to_the_spec(
    full: model.BackendService,
) -> None:
    config = config_of(full)
    grpc = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc.startswith("127.0.0.1:"), "the receiver must not listen beyond the pod"
    traces = config["service"]["pipelines"]["traces"]
    assert traces["processors"][0] == "memory_limiter"
    assert "batch" in traces["processors"]
    assert traces["exporters"] == ["otlp"]
    exporter = config["exporters"]["otlp"]
    assert exporter["endpoint"] == "tempo-distributor.observability.svc:4317"
    assert exporter["tls"]["insecure"] is True


def test_http_protocol_uses_otlphttp_with_a_url() -> None:
    obj = variant(
        "minimal",
        spec__observability__otelCollector={"endpoint": "collector:4318", "protocol": "http"},
    )
    config = config_of(obj)
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["otlphttp"]
    assert config["exporters"]["otlphttp"]["endpoint"] == "https://collector:4318"
    assert config["exporters"]["otlphttp"]["tls"]["insecure"] is False


@pytest.mark.parametrize(
    "endpoint",
    ['evil:4317"\nexporters: {debug: {}}', "a: b", "x\n  tls: {insecure: true}", "{{ name }}"],
)
def test_spec_values_cannot_change_the_config_structure(endpoint: str) -> None:
    obj = variant("minimal", spec__observability__otelCollector={"endpoint": endpoint})
    config = config_of(obj)
    assert config["exporters"] == {
        "otlp": {
            "endpoint": endpoint,
            "tls": {"insecure": False},
            "sending_queue": {"enabled": True, "queue_size": 2000},
            "retry_on_failure": {"enabled": True, "max_elapsed_time": "120s"},
        }
    }


def test_sidecar_is_native_and_mounts_its_config(full: model.BackendService) -> None:
    sc = otel.container(full, {"runAsNonRoot": True})
    assert sc["restartPolicy"] == "Always"
    assert sc["image"] == full.spec.observability.otel_collector.image
    assert sc["volumeMounts"][0]["name"] == otel.VOLUME
    assert sc["args"] == [f"--config={otel.CONFIG_DIR}/{otel.CONFIG_KEY}"]
    assert sc["resources"] == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"memory": "160Mi"},
    }
    assert {"name": "GOMEMLIMIT", "value": str(int(160 * 2**20 * 0.8))} in sc["env"]


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("128Mi", str(int(128 * 2**20 * 0.8))),
        ("1G", "800000000"),
        ("1.5Gi", str(int(1.5 * 2**30 * 0.8))),
        (None, None),
        ("1e9", "800000000"),
    ],
)
def test_gomemlimit_is_80_percent_of_the_limit(limit: str | None, expected: str | None) -> None:
    assert otel.gomemlimit(limit) == expected


def test_checksum_changes_with_the_collector_config_only() -> None:
    base = otel.checksum(variant("minimal"))
    assert base == otel.checksum(variant("minimal", spec__replicas=3))
    assert base != otel.checksum(
        variant("minimal", spec__observability__otelCollector={"endpoint": "other:4317"})
    )
