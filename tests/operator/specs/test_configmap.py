"""The service ConfigMap: the contract between the operator and the reference service."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adbm_operator import model
from adbm_operator.specs import configmap
from reference_service.config import Settings
from reference_service.domain import orders
from reference_service.policy import Policy
from tests.operator.specs.support import variant


@pytest.mark.parametrize("example", ["minimal", "full"])
def test_rendered_settings_are_what_the_service_reads(
    example: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key is a variable the service's Settings accepts, and the values survive the trip."""
    obj = variant(example)
    data = configmap.settings(obj)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    pool = obj.spec.database.pool
    assert settings.db_pool_max_size == pool.max_size
    assert settings.db_pool_min_size == pool.min_size
    assert settings.db_pool_acquire_timeout_seconds == pool.acquire_timeout_seconds
    assert settings.db_tenant_setting == obj.spec.database.row_level_security.tenant_setting
    assert settings.policy == configmap.policy(obj)
    assert settings.log_level == obj.spec.observability.log_level.value
    assert settings.trace_sampling_ratio == obj.spec.observability.tracing.sampling_ratio
    assert settings.queue_enabled is (obj.spec.queue is not None and bool(obj.spec.queue.workers))
    assert settings.http_port == configmap.HTTP_PORT
    assert settings.metrics_port == configmap.METRICS_PORT
    adbm_keys = {k for k in data if k.startswith("ADBM_")}
    known = {f"ADBM_{name.upper()}" for name in Settings.model_fields}
    assert adbm_keys <= known, adbm_keys - known


def test_a_queue_without_worker_groups_refuses_orders(monkeypatch: pytest.MonkeyPatch) -> None:
    """The outbox relay and the saga's deadline sweep run only in worker processes
    (`adbm-service worker`): with a queue but no worker group nothing would ever publish an
    accepted order's saga, so the service, configured from the rendered ConfigMap, must refuse
    `POST /orders` (503) rather than accept it (202) and leave it PENDING forever."""
    for obj, refused in (
        (variant("full", spec__queue__workers=[]), True),
        (variant("full"), False),
    ):
        for key, value in configmap.settings(obj).items():
            monkeypatch.setenv(key, value)
        reason = orders.unavailable(Settings())
        assert (reason is not None) is refused, reason
        if refused:
            assert reason is not None and "queue" in reason


def test_policy_carries_rate_limits_versioning_and_idempotency(
    full: model.BackendService,
) -> None:
    policy = configmap.policy(full)
    assert policy.version == 1
    rl = policy.rate_limit
    assert (rl.algorithm, rl.scope, rl.on_redis_unavailable) == ("GCRA", "Tenant", "FailOpen")
    assert (rl.default.requests, rl.default.period_seconds, rl.default.burst) == (200, 1, 100)
    assert [(r.method, r.path, r.requests, r.burst) for r in rl.routes] == [
        ("POST", "/api/v2/orders", 20, 10),
        ("GET", "/api/v2/products", 1000, 200),
    ]
    assert policy.versioning.current == "v2"
    (v1,) = policy.versioning.deprecated
    assert v1.version == "v1" and v1.sunset_at.year == 2027
    assert v1.link == "https://docs.example.com/payments/migrate-to-v2"
    assert v1.after_sunset == "Gone"  # the default: retired at its sunset
    assert policy.idempotency.ttl_seconds == 86_400
    # The document parses back into the service's own model unchanged.
    assert Policy.model_validate_json(policy.model_dump_json()) == policy


def test_policy_carries_whether_a_version_is_served_past_its_sunset() -> None:
    kept = variant(
        "full",
        spec__versioning__deprecated=[
            {
                "version": "v1",
                "deprecatedAt": "2026-09-01T00:00:00Z",
                "sunsetAt": "2027-03-01T00:00:00Z",
                "afterSunset": "Serve",
            }
        ],
    )
    (v1,) = configmap.policy(kept).versioning.deprecated
    assert v1.after_sunset == "Serve"


def test_redis_key_prefix_defaults_per_object(
    minimal: model.BackendService, full: model.BackendService
) -> None:
    assert configmap.settings(minimal)["ADBM_REDIS_KEY_PREFIX"] == "shop:shop:"
    assert configmap.settings(full)["ADBM_REDIS_KEY_PREFIX"] == "payments:"


def test_traces_go_to_the_sidecar_or_nowhere() -> None:
    on = configmap.settings(variant("minimal"))
    assert on["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    assert "OTEL_TRACES_EXPORTER" not in on
    off = configmap.settings(
        variant("minimal", spec__observability__otelCollector={"enabled": False})
    )
    assert off["OTEL_TRACES_EXPORTER"] == "none"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in off


def test_no_connection_strings_in_the_configmap(full: model.BackendService) -> None:
    cm = configmap.configmap(full)
    text = str(cm)
    # The payment provider's base URL is the one URL here: an address, never credentials (the
    # model refuses userinfo in it).
    assert "URL" not in "".join(k for k in cm["data"] if k != "ADBM_PAYMENT_PROVIDER_URL")
    assert "@" not in cm["data"]["ADBM_PAYMENT_PROVIDER_URL"]
    for scheme in ("postgresql://", "redis://", "amqp://"):
        assert scheme not in text


def test_the_payment_provider_url_cannot_carry_credentials() -> None:
    with pytest.raises(ValidationError):
        variant("full", spec__paymentProvider={"url": "https://user:secret@payments.example.com"})
    settings = configmap.settings(variant("full"))
    assert settings["ADBM_PAYMENT_PROVIDER_URL"] == "https://payments.example.com/v1"
    assert settings["ADBM_PAYMENT_TIMEOUT_SECONDS"] == "5.0"
    assert "ADBM_PAYMENT_PROVIDER_URL" not in configmap.settings(variant("minimal"))


def test_checksum_tracks_data_exactly() -> None:
    a = configmap.settings(variant("minimal"))
    assert configmap.checksum(a) == configmap.checksum(dict(reversed(list(a.items()))))
    b = configmap.settings(variant("minimal", spec__database__pool={"maxSize": 9}))
    assert configmap.checksum(a) != configmap.checksum(b)
