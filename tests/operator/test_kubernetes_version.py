"""The oldest Kubernetes the rendered objects need, as the README states it.

A schema cannot say this alone: the API server's OpenAPI lists alpha fields too (1.29's already
has `preStop.sleep`), and an alpha field is dropped unless its feature gate is on. So each field
we render that is newer than the API versions themselves is listed with its feature gate and the
release that turned the gate on by default, as `pkg/features/kube_features.go` of Kubernetes
records them; the rendered objects validate against the schemas of that minimum release
(`validation.MIN_K8S_VERSION`, used by `test_rendered_objects.py` as well).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from adbm_operator import model, specs
from tests.operator.validation import MIN_K8S_VERSION, validate

ROOT = Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _pod_specs(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if obj["kind"] == "Deployment":
        yield obj["spec"]["template"]["spec"]


def _native_sidecar(obj: dict[str, Any]) -> bool:
    return any(
        c.get("restartPolicy") == "Always"
        for pod in _pod_specs(obj)
        for c in pod.get("initContainers", [])
    )


def _pre_stop_sleep(obj: dict[str, Any]) -> bool:
    return any(
        "sleep" in (c.get("lifecycle") or {}).get("preStop", {})
        for pod in _pod_specs(obj)
        for c in pod["containers"]
    )


def _match_label_keys(obj: dict[str, Any]) -> bool:
    return any(
        "matchLabelKeys" in t
        for pod in _pod_specs(obj)
        for t in pod.get("topologySpreadConstraints", [])
    )


def _unhealthy_pod_eviction_policy(obj: dict[str, Any]) -> bool:
    return obj["kind"] == "PodDisruptionBudget" and "unhealthyPodEvictionPolicy" in obj["spec"]


class Feature(NamedTuple):
    field: str
    gate: str
    on_by_default: tuple[int, int]
    used_by: Callable[[dict[str, Any]], bool]


FEATURES = (
    Feature(
        "initContainers[].restartPolicy: Always", "SidecarContainers", (1, 29), _native_sidecar
    ),
    Feature("lifecycle.preStop.sleep", "PodLifecycleSleepAction", (1, 30), _pre_stop_sleep),
    Feature(
        "topologySpreadConstraints[].matchLabelKeys",
        "MatchLabelKeysInPodTopologySpread",
        (1, 27),
        _match_label_keys,
    ),
    Feature(
        "PodDisruptionBudget spec.unhealthyPodEvictionPolicy",
        "PDBUnhealthyPodEvictionPolicy",
        (1, 27),
        _unhealthy_pod_eviction_policy,
    ),
)


def _rendered(example: Path) -> list[dict[str, Any]]:
    obj = model.parse(yaml.safe_load(example.read_text()))
    return [*specs.render(obj), *specs.created_once(obj)]


def _minimum() -> tuple[int, int]:
    major, minor, _ = MIN_K8S_VERSION.split(".")
    return int(major), int(minor)


def test_every_listed_feature_is_rendered_by_some_example() -> None:
    """The table is about what we render: a feature no example uses would make the minimum a
    guess."""
    children = [c for example in EXAMPLES for c in _rendered(example)]
    for feature in FEATURES:
        assert any(feature.used_by(c) for c in children), feature.field


def test_the_minimum_is_the_newest_feature_rendered() -> None:
    children = [c for example in EXAMPLES for c in _rendered(example)]
    used = [f.on_by_default for f in FEATURES if any(f.used_by(c) for c in children)]
    assert max(used) == _minimum()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_objects_validate_for_the_minimum_version(example: Path) -> None:
    for child in _rendered(example):
        validate(child, MIN_K8S_VERSION)


def test_the_readme_states_the_minimum_and_why() -> None:
    readme = (ROOT / "README.md").read_text()
    major, minor = _minimum()
    assert f"Kubernetes {major}.{minor} or newer" in readme
    for feature in FEATURES:
        assert feature.gate in readme, feature.gate
