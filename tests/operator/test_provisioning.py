"""The reconcile's database step, its pure parts: backoff, DatabaseReady, status.database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adbm_operator import provisioning
from adbm_operator.database.canary import IsolationResult
from adbm_operator.database.condition import Observations
from adbm_operator.database.provision import RETRY_DELAYS_SECONDS, Report
from adbm_operator.model import BackendServiceStatus, Condition, ConditionStatus, DatabaseStatus

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_backoff_spaces_passes_and_new_credentials_skip_the_wait() -> None:
    backoff = provisioning.Backoff()
    assert not backoff.held(0.0, "1")
    delays = [backoff.record(True, 100.0, "1") for _ in RETRY_DELAYS_SECONDS]
    assert delays == list(RETRY_DELAYS_SECONDS)
    assert backoff.record(True, 100.0, "1") == RETRY_DELAYS_SECONDS[-1]
    assert backoff.held(100.0 + RETRY_DELAYS_SECONDS[-1] - 1, "1")
    assert not backoff.held(100.0 + RETRY_DELAYS_SECONDS[-1], "1")
    assert not backoff.held(101.0, "2"), "a changed admin Secret is tried at once"
    assert backoff.record(False, 101.0, "2") is None
    assert not backoff.held(101.0, "2") and backoff.failures == 0


def _proven() -> Report:
    isolation = IsolationResult(checks=())
    return Report(
        Observations(migrated=True, isolation=isolation),
        pending="no pending changes",
        changes=(),
        schema_version="0001_core",
    )


def _status(reason: str, verified: datetime | None) -> BackendServiceStatus:
    state = ConditionStatus.TRUE if reason == "Provisioned" else ConditionStatus.FALSE
    condition = Condition(
        type="DatabaseReady", status=state, reason=reason, last_transition_time=T0
    )
    database = DatabaseStatus(migrated_image="img:1", last_verified=verified)
    return BackendServiceStatus(conditions=[condition], database=database)


def test_last_verified_moves_on_periodic_passes_and_changes_only() -> None:
    report = _proven()
    verdict = provisioning.verdict(report, "job", None)
    assert (verdict.status, verdict.reason) == (ConditionStatus.TRUE, "Provisioned")
    later = T0 + timedelta(minutes=5)
    same = provisioning.database_status(
        _status("Provisioned", T0),
        image="img:1",
        report=report,
        verdict=verdict,
        periodic=False,
        now=later,
    )
    assert same.last_verified == T0, "an event-triggered pass confirming the same state"
    timer = provisioning.database_status(
        _status("Provisioned", T0),
        image="img:1",
        report=report,
        verdict=verdict,
        periodic=True,
        now=later,
    )
    assert timer.last_verified == later
    recovered = provisioning.database_status(
        _status("PolicyDrift", T0),
        image="img:1",
        report=report,
        verdict=verdict,
        periodic=False,
        now=later,
    )
    assert recovered.last_verified == later
    assert (recovered.schema_version, recovered.pending_changes) == (
        "0001_core",
        "no pending changes",
    )


def test_a_failed_job_is_not_just_migrating() -> None:
    waiting = Report(Observations(migrated=False), pending="", changes=())
    failure = provisioning.job_failure(
        {
            "status": {
                "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimit"}]
            }
        }
    )
    assert failure == "BackoffLimit"
    verdict = provisioning.verdict(waiting, "shop-migrate-abc", failure)
    assert (verdict.reason, verdict.message) == (
        "MigrationFailed",
        "migration Job shop-migrate-abc failed: BackoffLimit",
    )
    assert provisioning.verdict(waiting, "shop-migrate-abc", None).reason == "Migrating"
    assert provisioning.job_failure({"status": {"conditions": []}}) is None
