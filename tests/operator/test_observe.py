"""Reading live objects into facts: a Deployment's rollout as `kubectl rollout status` decides,
the collector sidecar in the pod templates the Deployments run, and whether a ServiceMonitor
selects a Service's metrics port by prometheus-operator's rules."""

from __future__ import annotations

from typing import Any

import pytest

from adbm_operator import observe


def deployment(
    *,
    replicas: int | None = 2,
    generation: int = 3,
    observed: int = 3,
    updated: int = 2,
    available: int = 2,
    total: int | None = None,
    deadline_exceeded: bool = False,
) -> dict[str, Any]:
    spec = {} if replicas is None else {"replicas": replicas}
    st: dict[str, Any] = {
        "observedGeneration": observed,
        "updatedReplicas": updated,
        "availableReplicas": available,
        "replicas": updated if total is None else total,
    }
    if deadline_exceeded:
        st["conditions"] = [
            {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "stuck"}
        ]
    return {"metadata": {"generation": generation}, "spec": spec, "status": st}


@pytest.mark.parametrize(
    ("live", "done", "failed", "words"),
    [
        (deployment(), True, False, "rolled out"),
        (None, False, False, "does not exist"),
        (deployment(observed=2), False, False, "waiting"),
        (deployment(updated=1), False, False, "1 of 2 replicas updated"),
        (deployment(total=3), False, False, "1 old replicas pending"),
        (deployment(available=1), False, False, "1 of 2 updated replicas available"),
        (deployment(deadline_exceeded=True), False, True, "progress deadline"),
        # An autoscaled Deployment has no `replicas` in our spec; Kubernetes defaults it to 1.
        (deployment(replicas=None, updated=1, available=1), True, False, "rolled out"),
    ],
)
def test_rollout_is_decided_as_kubectl_rollout_status_does(
    live: dict[str, Any] | None, done: bool, failed: bool, words: str
) -> None:
    r = observe.rollout(live, "shop-api")
    assert (r.done, r.failed) == (done, failed)
    assert words in r.message


def with_init_containers(*containers: dict[str, Any]) -> dict[str, Any]:
    live = deployment()
    live["spec"]["template"] = {"spec": {"containers": [{"name": "app"}]}}
    if containers:
        live["spec"]["template"]["spec"]["initContainers"] = list(containers)
    return live


SIDECAR = {"name": "otel-collector", "image": "otel:1", "restartPolicy": "Always"}


@pytest.mark.parametrize(
    ("live", "found"),
    [
        (with_init_containers(SIDECAR), True),
        (with_init_containers(), False),
        (None, False),
        # An init container that the kubelet waits for is not a sidecar.
        (with_init_containers({**SIDECAR, "restartPolicy": None}), False),
        # The image the spec asks for, not an older one still in the template.
        (with_init_containers({**SIDECAR, "image": "otel:0"}), False),
        (with_init_containers({**SIDECAR, "name": "other"}), False),
    ],
)
def test_collector_is_read_from_the_live_pod_template(
    live: dict[str, Any] | None, found: bool
) -> None:
    seen = observe.collector(True, "otel-collector", "otel:1", {"shop-api": live})
    assert (seen.running, seen.lacking) == ((("shop-api",), ()) if found else ((), ("shop-api",)))


def test_collector_names_each_deployment_without_it() -> None:
    seen = observe.collector(
        False,
        "otel-collector",
        "otel:1",
        {"shop-api": with_init_containers(SIDECAR), "shop-worker-orders": with_init_containers()},
    )
    assert seen == observe.Collector(False, ("shop-api",), ("shop-worker-orders",))


def service(**labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "shop", "namespace": "shop", "labels": labels or {"app": "shop"}},
        "spec": {
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "metrics", "port": 9090, "targetPort": "metrics"},
            ]
        },
    }


def monitor(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "shop"}},
        "namespaceSelector": {"matchNames": ["shop"]},
        "endpoints": [{"port": "metrics"}],
    }
    body.update(spec)
    return {"metadata": {"name": "shop-api", "namespace": "shop"}, "spec": body}


@pytest.mark.parametrize(
    ("live_monitor", "live_service", "state"),
    [
        (monitor(), service(), "Applied"),
        (None, service(), "Missing"),
        (monitor(), None, "Unselected"),
        (monitor(), service(app="other"), "Unselected"),
        (monitor(namespaceSelector={"matchNames": ["elsewhere"]}), service(), "Unselected"),
        # No namespaceSelector: the ServiceMonitor's own namespace; `any` selects every one.
        (monitor(namespaceSelector={}), service(), "Applied"),
        (
            monitor(namespaceSelector={"any": True}),
            {**service(), "metadata": {**service()["metadata"], "namespace": "x"}},
            "Applied",
        ),
        # Endpoints name Service ports; the one named must target the metrics port.
        (monitor(endpoints=[{"port": "http"}]), service(), "Unselected"),
        (monitor(endpoints=[{"port": "9090"}]), service(), "Unselected"),
        (
            monitor(
                selector={
                    "matchExpressions": [{"key": "app", "operator": "In", "values": ["shop"]}]
                }
            ),
            service(),
            "Applied",
        ),
        (
            monitor(selector={"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}),
            service(),
            "Unselected",
        ),
        (
            monitor(
                selector={
                    "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]
                }
            ),
            service(),
            "Applied",
        ),
        (
            monitor(selector={"matchExpressions": [{"key": "tier", "operator": "Exists"}]}),
            service(),
            "Unselected",
        ),
    ],
)
def test_monitoring_is_whether_the_monitor_selects_the_metrics_port(
    live_monitor: dict[str, Any] | None, live_service: dict[str, Any] | None, state: str
) -> None:
    assert observe.monitoring(live_monitor, live_service, "metrics").state == state
