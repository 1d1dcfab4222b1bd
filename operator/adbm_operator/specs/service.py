"""The API's ClusterIP Service, named like the BackendService so clients reach it at
`<name>.<namespace>.svc`."""

from __future__ import annotations

from typing import Any

from adbm_operator.model import BackendService
from adbm_operator.specs import configmap, deployment, labels

HTTP_SERVICE_PORT = 80


def _port(name: str, port: int) -> dict[str, Any]:
    # targetPort by name: the Service keeps working if the container port number changes.
    return {
        "name": name,
        "port": port,
        "targetPort": name,
        "protocol": "TCP",
        "appProtocol": "http",
    }


def build(obj: BackendService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": labels.metadata(obj, obj.name, deployment.COMPONENT),
        "spec": {
            "type": "ClusterIP",
            "selector": labels.selector_labels(obj, deployment.COMPONENT),
            "ports": [
                _port(deployment.HTTP_PORT_NAME, HTTP_SERVICE_PORT),
                _port(deployment.METRICS_PORT_NAME, configmap.METRICS_PORT),
            ],
        },
    }
