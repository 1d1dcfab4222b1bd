"""Conditions from observations: Ready only when the current generation is rolled out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adbm_operator import status
from adbm_operator.model import ChildSummary, ConditionStatus

T0 = datetime(2026, 11, 1, tzinfo=UTC)


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
    r = status.rollout(live, "shop-api")
    assert (r.done, r.failed) == (done, failed)
    assert words in r.message


def child(state: str = "Applied", kind: str = "Deployment", message: str = "") -> ChildSummary:
    return ChildSummary(
        api_version="apps/v1", kind=kind, name="shop-api", state=state, message=message
    )  # type: ignore[arg-type]


def observe(**changes: Any) -> status.Observation:
    values: dict[str, Any] = {
        "generation": 3,
        "paused": False,
        "children": [child()],
        "api": status.rollout(deployment(), "shop-api"),
        "monitoring": "Applied",
        "telemetry_enabled": True,
    }
    values.update(changes)
    return status.Observation(**values)


def conditions(st: Any) -> dict[str, Any]:
    return {c.type: c for c in st.conditions}


def test_ready_when_every_deployment_is_rolled_out() -> None:
    st = status.compute(observe(), None, T0)
    c = conditions(st)
    assert c["Ready"].status == ConditionStatus.TRUE
    assert c["Degraded"].status == ConditionStatus.FALSE
    assert c["Progressing"].status == ConditionStatus.FALSE
    assert st.observed_generation == 3
    assert all(x.observed_generation == 3 for x in st.conditions)
    assert st.replica_summary == "2/2"


def test_not_ready_while_a_worker_rolls_out() -> None:
    rolling = status.rollout(deployment(available=1), "shop-worker-orders")
    c = conditions(status.compute(observe(workers=[rolling]), None, T0))
    assert c["Ready"].status == ConditionStatus.FALSE
    assert c["Ready"].reason == "RollingOut"
    assert c["Progressing"].status == ConditionStatus.TRUE
    assert "shop-worker-orders" in c["Progressing"].message


def test_failed_child_degrades_with_its_name_and_the_api_message() -> None:
    failed = child("Failed", "Service", 'Service "shop" is invalid: spec.ports[0].port')
    c = conditions(status.compute(observe(children=[child(), failed]), None, T0))
    assert c["Degraded"].status == ConditionStatus.TRUE
    assert c["Degraded"].reason == "ApplyFailed"
    assert 'Service/shop-api: Service "shop" is invalid' in c["Degraded"].message
    assert c["Ready"].status == ConditionStatus.FALSE


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"missing_secrets": ["shop-redis"]}, "SecretNotFound"),
        ({"error": "503 Unavailable: API server unreachable"}, "ReconcileError"),
        (
            {"api": status.rollout(deployment(deadline_exceeded=True), "shop-api")},
            "ProgressDeadlineExceeded",
        ),
        ({"notes": ["KEDA is not installed"]}, "CRDNotInstalled"),
        ({"error": "bad", "error_reason": "InvalidSpec"}, "InvalidSpec"),
    ],
)
def test_degraded_reasons(changes: dict[str, Any], reason: str) -> None:
    c = conditions(status.compute(observe(**changes), None, T0))
    assert (c["Degraded"].status, c["Degraded"].reason) == (ConditionStatus.TRUE, reason)
    assert (c["Ready"].status, c["Ready"].reason) == (ConditionStatus.FALSE, reason)


def test_monitoring_condition_says_why() -> None:
    for state, expected in [
        ("Applied", (ConditionStatus.TRUE, "ServiceMonitorApplied")),
        ("Disabled", (ConditionStatus.TRUE, "Disabled")),
        ("CRDNotInstalled", (ConditionStatus.FALSE, "CRDNotInstalled")),
        ("Failed", (ConditionStatus.FALSE, "ApplyFailed")),
    ]:
        c = conditions(status.compute(observe(monitoring=state), None, T0))
        assert (c["MonitoringReady"].status, c["MonitoringReady"].reason) == expected


def test_paused_says_so_and_is_not_progressing() -> None:
    c = conditions(status.compute(observe(paused=True), None, T0))
    assert (c["Paused"].status, c["Paused"].reason) == (ConditionStatus.TRUE, "Paused")
    assert c["Progressing"].reason == "Paused"


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = status.compute(observe(), None, T0)
    later = T0 + timedelta(minutes=5)
    same = status.compute(observe(), first, later)
    assert conditions(same)["Ready"].last_transition_time == T0
    rolling = observe(api=status.rollout(deployment(available=1), "shop-api"))
    flipped = status.compute(rolling, first, later)
    assert conditions(flipped)["Ready"].last_transition_time == later


def test_transitions_name_each_changed_condition_once() -> None:
    first = status.compute(observe(), None, T0)
    # A healthy new object announces nothing; one that needs attention says so at once.
    assert status.transitions(None, first) == []
    worrying = status.compute(observe(monitoring="CRDNotInstalled"), None, T0)
    assert [(t.type, t.warning) for t in status.transitions(None, worrying)] == [
        ("MonitoringReady", True)
    ]
    assert status.transitions(first, status.compute(observe(), first, T0)) == []
    broken = status.compute(observe(missing_secrets=["x"]), first, T0)
    changed = {t.type: t for t in status.transitions(first, broken)}
    assert set(changed) == {"Ready", "Degraded"}
    assert changed["Degraded"].warning and changed["Ready"].warning


def test_status_round_trips_through_its_patch() -> None:
    st = status.compute(observe(), None, T0)
    assert status.parse(status.as_patch(st)) == st
    assert status.as_patch(st)["api"]["availableReplicas"] == 2
    assert status.parse({"kopf": {"progress": {}}}) is not None
    assert status.parse(None) is None
