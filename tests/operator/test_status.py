"""Conditions from observations: Ready derived by its condition set, True only when the current
generation is rolled out and every other dependent is True."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from adbm_operator import observe, status
from adbm_operator.conditions import Verdict
from adbm_operator.model import ChildSummary, ConditionStatus
from tests.operator.test_observe import deployment

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def child(state: str = "Applied", kind: str = "Deployment", message: str = "") -> ChildSummary:
    return ChildSummary(
        api_version="apps/v1", kind=kind, name="shop-api", state=state, message=message
    )  # type: ignore[arg-type]


def observation(**changes: Any) -> status.Observation:
    values: dict[str, Any] = {
        "generation": 3,
        "paused": False,
        "children": [child()],
        "api": observe.rollout(deployment(), "shop-api"),
        "monitoring": observe.Monitoring("Applied"),
        "collector": observe.Collector(enabled=True, running=("shop-api",)),
        "database": Verdict("DatabaseReady", ConditionStatus.TRUE, "Provisioned", "proven"),
    }
    values.update(changes)
    return status.Observation(**values)


def conditions(st: Any) -> dict[str, Any]:
    return {c.type: c for c in st.conditions}


def test_ready_when_every_deployment_is_rolled_out() -> None:
    st = status.compute(observation(), None, T0)
    c = conditions(st)
    assert c["Ready"].status == ConditionStatus.TRUE
    assert c["Degraded"].status == ConditionStatus.FALSE
    assert c["Progressing"].status == ConditionStatus.FALSE
    assert st.observed_generation == 3
    assert all(x.observed_generation == 3 for x in st.conditions)
    assert st.replica_summary == "2/2"


def test_not_ready_while_a_worker_rolls_out() -> None:
    rolling = observe.rollout(deployment(available=1), "shop-worker-orders")
    c = conditions(status.compute(observation(workers=[rolling]), None, T0))
    assert c["Ready"].status == ConditionStatus.FALSE
    assert c["Ready"].reason == "RollingOut"
    assert c["Progressing"].status == ConditionStatus.TRUE
    assert "shop-worker-orders" in c["Progressing"].message


def test_failed_child_degrades_with_its_name_and_the_api_message() -> None:
    failed = child("Failed", "Service", 'Service "shop" is invalid: spec.ports[0].port')
    c = conditions(status.compute(observation(children=[child(), failed]), None, T0))
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
            {"api": observe.rollout(deployment(deadline_exceeded=True), "shop-api")},
            "ProgressDeadlineExceeded",
        ),
        ({"unscaled": ["KEDA is not installed"]}, "CRDNotInstalled"),
        ({"error": "bad", "error_reason": "InvalidSpec"}, "InvalidSpec"),
    ],
)
def test_degraded_reasons(changes: dict[str, Any], reason: str) -> None:
    c = conditions(status.compute(observation(**changes), None, T0))
    assert (c["Degraded"].status, c["Degraded"].reason) == (ConditionStatus.TRUE, reason)
    assert (c["Ready"].status, c["Ready"].reason) == (ConditionStatus.FALSE, reason)


def test_monitoring_condition_says_why() -> None:
    for state, expected in [
        ("Applied", (ConditionStatus.TRUE, "ServiceMonitorApplied")),
        ("Disabled", (ConditionStatus.TRUE, "Disabled")),
        ("CRDNotInstalled", (ConditionStatus.FALSE, "CRDNotInstalled")),
        ("Failed", (ConditionStatus.FALSE, "ApplyFailed")),
        ("Missing", (ConditionStatus.FALSE, "ServiceMonitorMissing")),
        ("Unselected", (ConditionStatus.FALSE, "MetricsPortNotSelected")),
    ]:
        seen = observe.Monitoring(state)  # type: ignore[arg-type]
        c = conditions(status.compute(observation(monitoring=seen), None, T0))
        assert (c["MonitoringReady"].status, c["MonitoringReady"].reason) == expected
        # Informational: Prometheus not scraping does not make the service unready.
        assert c["Ready"].status == ConditionStatus.TRUE


def test_paused_says_so_and_is_not_progressing() -> None:
    c = conditions(status.compute(observation(paused=True), None, T0))
    assert (c["Paused"].status, c["Paused"].reason) == (ConditionStatus.TRUE, "Paused")
    assert c["Progressing"].reason == "Paused"


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = status.compute(observation(), None, T0)
    later = T0 + timedelta(minutes=5)
    same = status.compute(observation(), first, later)
    assert conditions(same)["Ready"].last_transition_time == T0
    rolling = observation(api=observe.rollout(deployment(available=1), "shop-api"))
    flipped = status.compute(rolling, first, later)
    assert conditions(flipped)["Ready"].last_transition_time == later


def test_transitions_name_each_changed_condition_once() -> None:
    first = status.compute(observation(), None, T0)
    # A healthy new object announces nothing; one that needs attention says so at once.
    assert status.transitions(None, first) == []
    worrying = status.compute(
        observation(monitoring=observe.Monitoring("CRDNotInstalled")), None, T0
    )
    assert [(t.type, t.warning) for t in status.transitions(None, worrying)] == [
        ("MonitoringReady", True)
    ]
    assert status.transitions(first, status.compute(observation(), first, T0)) == []
    broken = status.compute(observation(missing_secrets=["x"]), first, T0)
    changed = {t.type: t for t in status.transitions(first, broken)}
    assert set(changed) == {"Ready", "Degraded"}
    assert changed["Degraded"].warning and changed["Ready"].warning


def test_status_round_trips_through_its_patch() -> None:
    st = status.compute(observation(), None, T0)
    assert status.parse(status.as_patch(st)) == st
    assert status.as_patch(st)["api"]["availableReplicas"] == 2
    assert status.parse({"kopf": {"progress": {}}}) is not None
    assert status.parse(None) is None


def test_ready_is_true_only_when_every_dependent_is_true() -> None:
    c = conditions(status.compute(observation(), None, T0))
    assert all(c[t].status == ConditionStatus.TRUE for t in status.READY_SET.dependents)
    assert c["Ready"].status == ConditionStatus.TRUE


@pytest.mark.parametrize(
    ("changes", "dependent", "reason"),
    [
        ({"error": "boom"}, "ResourcesApplied", "ReconcileError"),
        ({"children": [child("Failed", "Service", "no")]}, "ResourcesApplied", "ApplyFailed"),
        ({"missing_secrets": ["shop-redis"]}, "SecretsReady", "SecretNotFound"),
        ({"api": None}, "DeploymentsReady", "Pending"),
        (
            {"collector": observe.Collector(enabled=True, lacking=("shop-api",))},
            "TelemetryReady",
            "CollectorMissing",
        ),
        (
            {"collector": observe.Collector(enabled=False, running=("shop-api",))},
            "TelemetryReady",
            "CollectorNotRemoved",
        ),
        ({"unscaled": ["KEDA is not installed"]}, "AutoscalingReady", "CRDNotInstalled"),
    ],
)
def test_ready_carries_the_reason_and_message_of_the_dependent_that_is_not_true(
    changes: dict[str, Any], dependent: str, reason: str
) -> None:
    c = conditions(status.compute(observation(**changes), None, T0))
    assert (c[dependent].status, c[dependent].reason) == (ConditionStatus.FALSE, reason)
    assert (c["Ready"].status, c["Ready"].reason) == (ConditionStatus.FALSE, reason)
    assert c["Ready"].message == c[dependent].message


def test_the_first_failing_dependent_in_declared_order_wins() -> None:
    both = observation(missing_secrets=["shop-redis"], unscaled=["KEDA is not installed"])
    c = conditions(status.compute(both, None, T0))
    assert c["Ready"].reason == "SecretNotFound"
    assert status.READY_SET.dependents.index("SecretsReady") < (
        status.READY_SET.dependents.index("AutoscalingReady")
    )
    # Degraded names every problem, Ready only the first.
    assert "KEDA" in c["Degraded"].message and "shop-redis" in c["Degraded"].message


def test_telemetry_is_observed_not_taken_from_the_spec() -> None:
    # The spec asks for the collector; the running Deployment has none: not ready.
    lacking = observe.Collector(enabled=True, lacking=("shop-api",))
    c = conditions(status.compute(observation(collector=lacking), None, T0))
    assert c["TelemetryReady"].status == ConditionStatus.FALSE
    assert "shop-api" in c["TelemetryReady"].message
    disabled = observe.Collector(enabled=False, lacking=("shop-api",))
    c = conditions(status.compute(observation(collector=disabled), None, T0))
    assert (c["TelemetryReady"].status, c["TelemetryReady"].reason) == (
        ConditionStatus.TRUE,
        "Disabled",
    )
    # Nothing looked at (an invalid spec): unknown, not claimed.
    c = conditions(status.compute(observation(collector=None), None, T0))
    assert c["TelemetryReady"].status == ConditionStatus.UNKNOWN


def test_dependents_post_no_events_of_their_own() -> None:
    first = status.compute(observation(), None, T0)
    broken = status.compute(observation(collector=observe.Collector(True, (), ("a",))), first, T0)
    assert {t.type for t in status.transitions(first, broken)} == {"Ready", "Degraded"}


def test_ready_waits_for_a_provisioning_pass_and_blames_the_database_first() -> None:
    unobserved = conditions(status.compute(observation(database=None), None, T0))
    assert (unobserved["Ready"].status, unobserved["Ready"].reason) == (
        ConditionStatus.UNKNOWN,
        "NotObserved",
    )
    assert unobserved["Degraded"].status == ConditionStatus.FALSE
    down = Verdict("DatabaseReady", ConditionStatus.FALSE, "Unreachable", "no answer")
    c = conditions(status.compute(observation(database=down, missing_secrets=["x"]), None, T0))
    assert (c["Ready"].reason, c["Ready"].message) == ("Unreachable", "no answer")
    assert (c["Degraded"].status, c["Degraded"].reason) == (ConditionStatus.TRUE, "Unreachable")
    assert c["DatabaseReady"].status == ConditionStatus.FALSE


def test_a_migration_in_progress_is_on_the_way_not_degraded() -> None:
    migrating = Verdict("DatabaseReady", ConditionStatus.FALSE, "Migrating", "waiting for the Job")
    c = conditions(status.compute(observation(database=migrating), None, T0))
    assert (c["Ready"].status, c["Ready"].reason) == (ConditionStatus.FALSE, "Migrating")
    assert c["Degraded"].status == ConditionStatus.FALSE
