"""The API PodDisruptionBudget: drains take one API pod at a time and are never blocked."""

from __future__ import annotations

import pytest

from adbm_operator.specs import deployment, labels, pdb
from tests.operator.specs.support import assert_valid, example


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
