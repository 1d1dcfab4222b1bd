"""The API PodDisruptionBudget: drains take one API pod at a time and are never blocked."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from adbm_operator import model
from adbm_operator.specs import deployment, labels, pdb

EXAMPLES = Path(__file__).parents[3] / "examples"
K8S_VERSIONS = sorted({"1.33", latest_version()})


def example(name: str, changes: Mapping[str, Any] | None = None) -> model.BackendService:
    """An example BackendService with dotted-path changes applied."""
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    for path, value in (changes or {}).items():
        *parents, leaf = path.split(".")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return model.parse(body)


def assert_valid(obj: dict[str, Any]) -> None:
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", ["minimal", "full"])
def test_pdb_is_a_valid_kubernetes_object(name: str) -> None:
    assert_valid(pdb.build(example(name)))


@pytest.mark.parametrize("name", ["minimal", "full"])
def test_pdb_selects_exactly_the_api_pods(name: str) -> None:
    obj = example(name)
    selector = pdb.build(obj)["spec"]["selector"]["matchLabels"]
    dep = deployment.build(obj)
    assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert selector == dep["spec"]["selector"]["matchLabels"]
    if obj.spec.queue is not None:
        for group in obj.spec.queue.workers:
            assert not selector.items() <= labels.labels(obj, "worker", group.name).items()


@pytest.mark.parametrize("replicas", [1, 2, 10])
def test_pdb_allows_one_eviction_at_any_replica_count(replicas: int) -> None:
    # minAvailable would block every drain at one replica; maxUnavailable 1 never does.
    spec = pdb.build(example("minimal", {"spec.replicas": replicas}))["spec"]
    assert spec["maxUnavailable"] == 1
    assert "minAvailable" not in spec


def test_unhealthy_pods_never_block_a_drain() -> None:
    spec = pdb.build(example("minimal"))["spec"]
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_pdb_lives_beside_the_deployment() -> None:
    obj = example("full")
    meta = pdb.build(obj)["metadata"]
    assert meta["namespace"] == obj.namespace
    assert meta["name"] == deployment.name(obj)
    assert meta["labels"] == labels.labels(obj, "api")
