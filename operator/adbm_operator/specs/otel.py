"""The OpenTelemetry collector sidecar and its ConfigMap.

The collector runs as a native sidecar (an init container with `restartPolicy: Always`), written
straight into the pod template: it is up before the service starts and still up while the
service flushes its last spans on shutdown, with no injection webhook to race against.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2

from adbm_operator import model
from adbm_operator.model import BackendService, OtlpProtocol
from adbm_operator.specs import configmap, labels

OTLP_HTTP_PORT = 4318
HEALTH_PORT = 13133
CONFIG_KEY = "collector.yaml"
CONFIG_DIR = "/etc/otelcol"
VOLUME = "otel-collector-config"
CONTAINER = "otel-collector"


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("adbm_operator", "specs"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    return env.get_template("collector.yaml.j2")


def enabled(obj: BackendService) -> bool:
    return obj.spec.observability.otel_collector.enabled


def name(obj: BackendService) -> str:
    return labels.child_name(obj, "otel")


def collector_config(obj: BackendService) -> str:
    """The collector's YAML configuration."""
    spec = obj.spec.observability.otel_collector
    assert spec.endpoint is not None  # the model requires it when the collector is enabled
    return _template().render(
        name=obj.name,
        grpc_port=configmap.OTLP_GRPC_PORT,
        http_port=OTLP_HTTP_PORT,
        health_port=HEALTH_PORT,
        protocol=spec.protocol.value,
        endpoint=_endpoint(spec.endpoint, spec.protocol, spec.insecure),
        insecure=spec.insecure,
    )


def _endpoint(endpoint: str, protocol: OtlpProtocol, insecure: bool) -> str:
    # otlphttp needs a URL; a bare host:port is completed with the scheme TLS implies.
    if protocol is OtlpProtocol.HTTP and "://" not in endpoint:
        return f"{'http' if insecure else 'https'}://{endpoint}"
    return endpoint


def configmap_object(obj: BackendService) -> dict[str, Any] | None:
    if not enabled(obj):
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": labels.metadata(obj, name(obj), "otel-collector"),
        "data": {CONFIG_KEY: collector_config(obj)},
    }


def checksum(obj: BackendService) -> str | None:
    cm = configmap_object(obj)
    return None if cm is None else configmap.checksum(cm["data"])


def volume(obj: BackendService) -> dict[str, Any]:
    return {"name": VOLUME, "configMap": {"name": name(obj)}}


def gomemlimit(memory_limit: str | None) -> str | None:
    """80% of the container's memory limit, in bytes: the Go runtime cannot see the cgroup
    limit, and a soft limit below it makes the collector collect garbage before the OOM killer
    acts. None when there is no limit."""
    if memory_limit is None:
        return None
    return str(int(model.quantity_value(memory_limit) * 8 / 10))


def _env(memory_limit: str | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    ]
    soft_limit = gomemlimit(memory_limit)
    if soft_limit is not None:
        env.append({"name": "GOMEMLIMIT", "value": soft_limit})
    return env


def container(obj: BackendService, security_context: dict[str, Any]) -> dict[str, Any]:
    """The sidecar, for the pod's initContainers."""
    spec = obj.spec.observability.otel_collector
    return {
        "name": CONTAINER,
        "image": spec.image,
        "imagePullPolicy": obj.spec.image_pull_policy,
        # Native sidecar: started before the app containers, stopped after them.
        "restartPolicy": "Always",
        "args": [f"--config={CONFIG_DIR}/{CONFIG_KEY}"],
        "env": _env(spec.resources.limits.memory),
        "ports": [
            {"name": "otlp-grpc", "containerPort": configmap.OTLP_GRPC_PORT, "protocol": "TCP"},
            {"name": "otlp-http", "containerPort": OTLP_HTTP_PORT, "protocol": "TCP"},
            {"name": "otel-health", "containerPort": HEALTH_PORT, "protocol": "TCP"},
        ],
        "startupProbe": {
            "httpGet": {"path": "/", "port": HEALTH_PORT},
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
        "livenessProbe": {
            "httpGet": {"path": "/", "port": HEALTH_PORT},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "resources": spec.resources.model_dump(mode="json", exclude_none=True),
        "securityContext": security_context,
        "volumeMounts": [{"name": VOLUME, "mountPath": CONFIG_DIR, "readOnly": True}],
    }
