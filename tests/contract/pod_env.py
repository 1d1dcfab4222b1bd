"""A rendered BackendService as a kubelet sees it: the app containers, and the environment each
gets from its ConfigMap, its Secrets and the downward API.

The environment follows the kubelet's rules (`makeEnvironmentVariables` in
`pkg/kubelet/kubelet_pods.go`, and `third_party/forked/golang/expansion`): `envFrom` first,
then `env` in order, later entries overriding earlier ones; `$(VAR)` in a `value` expands to a
variable defined before it, `$$` is a literal `$`, and a reference to an undefined variable is
left as written (`expand`, shared with the migration Job's stand-in in
tests/operator/database/kubelet.py).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adbm_operator import model, reconcile, specs
from adbm_operator.specs import pod
from tests.operator.database.kubelet import expand

EXAMPLES = Path(__file__).parents[2] / "examples"
EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))
COMPONENT_LABEL = "app.kubernetes.io/component"


@dataclass(frozen=True)
class Rendered:
    obj: model.BackendService
    children: list[dict[str, Any]]
    created_once: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in (*self.children, *self.created_once) if c["kind"] == kind]

    def configmap(self, name: str) -> dict[str, str]:
        found = [c for c in self.of_kind("ConfigMap") if c["metadata"]["name"] == name]
        assert len(found) == 1, f"no rendered ConfigMap named {name}"
        data: dict[str, str] = found[0].get("data", {})
        return data

    def app_containers(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(Deployment, its service container) for every Deployment running the service."""
        for deployment in self.of_kind("Deployment"):
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                if container["name"] == pod.APP_CONTAINER:
                    yield deployment, container


def render(body: Mapping[str, Any]) -> Rendered:
    obj = model.parse(dict(body))
    return Rendered(obj, specs.render(obj), specs.created_once(obj))


def render_example(path: Path) -> Rendered:
    return render(yaml.safe_load(path.read_text()))


def generated_secrets(rendered: Rendered) -> dict[str, dict[str, str]]:
    """The Secrets the operator creates, with their values generated as the operator does,
    decoded: name -> key -> value."""
    out: dict[str, dict[str, str]] = {}
    for shape in rendered.created_once:
        if shape["kind"] == "Secret":
            created = reconcile.with_generated_value(shape)
            out[created["metadata"]["name"]] = {
                k: base64.b64decode(v).decode() for k, v in created["data"].items()
            }
    return out


def environment(
    rendered: Rendered,
    container: Mapping[str, Any],
    *,
    secrets: Mapping[str, Mapping[str, str]],
    pod_fields: Mapping[str, str],
) -> dict[str, str]:
    """The container's environment; a missing ConfigMap, Secret, key or field fails (the
    kubelet would not start the container: CreateContainerConfigError)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert set(source) == {"configMapRef"}, f"unexpected envFrom source {source}"
        env.update(rendered.configmap(source["configMapRef"]["name"]))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
            continue
        ref = var["valueFrom"]
        if "secretKeyRef" in ref:
            secret, key = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
            assert key in secrets.get(secret, {}), f"{var['name']}: no key {key} in Secret {secret}"
            env[var["name"]] = secrets[secret][key]
        elif "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            assert path in pod_fields, f"{var['name']}: unexpected fieldRef {path}"
            env[var["name"]] = pod_fields[path]
        else:
            raise AssertionError(f"{var['name']}: unexpected valueFrom {ref}")
    return env


def container_port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert len(named) == 1, f"the probe's port {port!r} names no container port"
    number: int = named[0]
    return number
