"""The BackendService model: its defaults and every validation rule with its message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from adbm_operator import model
from reference_service.db.schema import TENANT_SCOPED

EXAMPLES = Path(__file__).parents[2] / "examples"


def minimal() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / "minimal.yaml").read_text())
    return loaded


def full() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((EXAMPLES / "full.yaml").read_text())
    return loaded


def set_path(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of body with a dotted path set (creating mappings on the way)."""
    body = copy.deepcopy(body)
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return body


def errors_of(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as caught:
        model.parse(body)
    return [
        (".".join(str(p) for p in e["loc"]), e["msg"].removeprefix("Value error, "))
        for e in caught.value.errors()
    ]


def test_minimal_example_gets_production_defaults() -> None:
    spec = model.parse(minimal()).spec
    assert spec.image == model.DEFAULT_IMAGE
    assert spec.replicas == 2
    assert spec.autoscaling is None
    assert spec.resources.requests.cpu == "250m"
    assert spec.resources.limits.memory == "512Mi"
    assert spec.database.pool.max_size == 10
    assert spec.database.pool.acquire_timeout_seconds == 2.0
    assert spec.database.connection_budget == 100
    assert spec.database.deletion_policy is model.DeletionPolicy.RETAIN
    assert spec.database.row_level_security.tenant_setting == "app.tenant_id"
    assert tuple(spec.database.row_level_security.tables) == model.DEFAULT_RLS_TABLES
    # The defaults govern every tenant-scoped table of the reference service.
    assert model.DEFAULT_RLS_TABLES == TENANT_SCOPED
    assert spec.database.admin_secret_ref.key == "uri"
    assert spec.rate_limit.algorithm is model.RateLimitAlgorithm.GCRA
    assert spec.rate_limit.scope is model.RateLimitScope.TENANT
    assert spec.rate_limit.on_redis_unavailable is model.RedisUnavailable.FAIL_OPEN
    assert (spec.rate_limit.requests, spec.rate_limit.period_seconds) == (100, 1)
    assert spec.rate_limit.burst == 50
    assert spec.idempotency.ttl_seconds == 86_400
    assert spec.queue is None
    assert spec.versioning.current == "v2"
    assert spec.versioning.deprecated == []
    obs = spec.observability
    assert obs.log_level is model.LogLevel.INFO
    assert obs.tracing.sampling_ratio == 0.1
    assert obs.otel_collector.enabled is True
    assert obs.otel_collector.image == model.DEFAULT_COLLECTOR_IMAGE
    assert obs.service_monitor.enabled is True
    assert obs.service_monitor.interval == "30s"
    assert spec.paused is False


def test_full_example_keeps_every_value() -> None:
    spec = model.parse(full()).spec
    assert spec.autoscaling == model.Autoscaling(
        min_replicas=3, max_replicas=10, target_cpu_utilization_percentage=65
    )
    assert spec.database.app_role == "payments_app"
    assert [(r.method, r.path) for r in spec.rate_limit.routes] == [
        (model.HttpMethod.POST, "/api/v2/orders"),
        (model.HttpMethod.GET, "/api/v2/products"),
    ]
    assert spec.queue is not None
    notifications = spec.queue.workers[1]
    assert notifications.autoscaling is not None
    assert notifications.autoscaling.scaler is model.WorkerScaler.QUEUE_LENGTH
    assert notifications.autoscaling.min_replicas == 0
    assert spec.versioning.deprecated[0].version == "v1"
    assert spec.observability.service_monitor.labels == {"release": "kube-prometheus-stack"}


def test_with_defaults_round_trips_and_echoes_metadata() -> None:
    body = model.with_defaults(model.parse(full()))
    assert body["metadata"] == full()["metadata"]
    assert model.parse(body) == model.parse(full())
    # Unset optionals are left out, as the API server would store them.
    assert "appRole" not in model.with_defaults(model.parse(minimal()))["spec"]["database"]


def test_max_connections_counts_workers_at_their_autoscaling_maximum() -> None:
    spec = model.parse(full()).spec
    # API max 10, orders 2, notifications max 5: 17 pods x pool 8.
    assert model.max_connections(spec) == 17 * 8
    assert model.max_connections(model.parse(minimal()).spec) == 2 * 10


# Each case: a field set on the minimal (or full) example, where the error shows, and its message.
INVALID: list[tuple[str, str, Any, str, str]] = [
    ("minimal", "spec.replicas", 0, "spec.replicas", "greater than or equal to 1"),
    ("minimal", "spec.replicas", "two", "spec.replicas", "valid integer"),
    ("minimal", "spec.unknownField", 1, "spec.unknownField", "Extra inputs are not permitted"),
    ("minimal", "spec.database.pool.maxSize", 0, "spec.database.pool.maxSize", "greater than"),
    ("minimal", "spec.database.pool.maxSize", 101, "spec.database.pool.maxSize", "less than"),
    (
        "minimal",
        "spec.database.pool.minSize",
        11,
        "spec.database.pool",
        "pool.minSize must not exceed pool.maxSize",
    ),
    (
        "minimal",
        "spec.database.pool.acquireTimeoutSeconds",
        0,
        "spec.database.pool.acquireTimeoutSeconds",
        "greater than 0",
    ),
    ("minimal", "spec.database.name", "Shop-DB", "spec.database.name", "should match pattern"),
    (
        "minimal",
        "spec.database.adminSecretRef.name",
        "Not_A_Name",
        "spec.database.adminSecretRef.name",
        "should match pattern",
    ),
    (
        "minimal",
        "spec.database.rowLevelSecurity.tenantSetting",
        "tenant_id",
        "spec.database.rowLevelSecurity.tenantSetting",
        "should match pattern",
    ),
    (
        "minimal",
        "spec.database.rowLevelSecurity.tables",
        ["orders", "orders"],
        "spec.database.rowLevelSecurity",
        "rowLevelSecurity.tables must not repeat a table",
    ),
    (
        "minimal",
        "spec.database.rowLevelSecurity.tables",
        [],
        "spec.database.rowLevelSecurity.tables",
        "at least 1 item",
    ),
    (
        "minimal",
        "spec.database.deletionPolicy",
        "Drop",
        "spec.database.deletionPolicy",
        "'Retain' or 'Delete'",
    ),
    (
        "minimal",
        "spec.replicas",
        11,
        "spec",
        "API and worker replicas at their autoscaling maximum (11 + 0) \u00d7 pool.maxSize 10"
        " = 110 connections exceed database.connectionBudget 100",
    ),
    (
        "minimal",
        "spec.autoscaling",
        {"minReplicas": 5, "maxReplicas": 3},
        "spec.autoscaling",
        "minReplicas must not exceed maxReplicas",
    ),
    (
        "minimal",
        "spec.autoscaling",
        {"maxReplicas": 11},
        "spec",
        "exceed database.connectionBudget",
    ),
    (
        "minimal",
        "spec.resources.requests.cpu",
        "lots",
        "spec.resources.requests.cpu",
        "should match pattern",
    ),
    (
        "minimal",
        "spec.resources",
        {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}},
        "spec.resources",
        "requests.cpu must not exceed limits.cpu",
    ),
    (
        "minimal",
        "spec.resources",
        {"requests": {"memory": "1Gi"}, "limits": {"memory": "1G"}},
        "spec.resources",
        "requests.memory must not exceed limits.memory",
    ),
    (
        "minimal",
        "spec.resources.requests.cpu",
        "-1",
        "spec.resources.requests.cpu",
        "should match pattern",
    ),
    (
        "minimal",
        "spec.observability.serviceMonitor.interval",
        "0s",
        "spec.observability.serviceMonitor",
        "serviceMonitor.interval must not be zero",
    ),
    (
        "minimal",
        "spec.observability.serviceMonitor.labels",
        {"not a label key": "x"},
        "spec.observability.serviceMonitor.labels.not a label key.[key]",
        "should match pattern",
    ),
    ("minimal", "metadata.namespace", "Bad_NS", "metadata.namespace", "should match pattern"),
    ("minimal", "spec.rateLimit.burst", 0, "spec.rateLimit.burst", "greater than or equal to 1"),
    (
        "minimal",
        "spec.rateLimit.algorithm",
        "LeakyBucket",
        "spec.rateLimit.algorithm",
        "'GCRA' or 'TokenBucket'",
    ),
    (
        "minimal",
        "spec.rateLimit.onRedisUnavailable",
        "Retry",
        "spec.rateLimit.onRedisUnavailable",
        "'FailOpen' or 'FailClosed'",
    ),
    (
        "minimal",
        "spec.rateLimit.routes",
        [{"path": "/api/v1/orders"}, {"path": "/api/v1/orders"}],
        "spec.rateLimit",
        "rateLimit.routes must not repeat a method and path",
    ),
    (
        "minimal",
        "spec.rateLimit.routes",
        [{"path": "api/v1/orders"}],
        "spec.rateLimit.routes.0.path",
        "should match pattern",
    ),
    (
        "minimal",
        "spec.idempotency.ttlSeconds",
        10,
        "spec.idempotency.ttlSeconds",
        "greater than or equal to 60",
    ),
    (
        "minimal",
        "spec.versioning.current",
        "2",
        "spec.versioning.current",
        "should match pattern",
    ),
    (
        "minimal",
        "spec.versioning.deprecated",
        [
            {
                "version": "v1",
                "deprecatedAt": "2027-01-01T00:00:00Z",
                "sunsetAt": "2026-01-01T00:00:00Z",
            }
        ],
        "spec.versioning.deprecated.0",
        "sunsetAt must not be before deprecatedAt",
    ),
    (
        "minimal",
        "spec.versioning.deprecated",
        [
            {
                "version": "v1",
                "deprecatedAt": "2026-01-01T00:00:00",
                "sunsetAt": "2027-01-01T00:00:00Z",
            }
        ],
        "spec.versioning.deprecated.0.deprecatedAt",
        "timezone info",
    ),
    (
        "minimal",
        "spec.versioning.deprecated",
        [
            {
                "version": "v2",
                "deprecatedAt": "2026-01-01T00:00:00Z",
                "sunsetAt": "2027-01-01T00:00:00Z",
            }
        ],
        "spec.versioning",
        "the current version cannot be deprecated",
    ),
    (
        "minimal",
        "spec.versioning.deprecated",
        [
            {
                "version": "v1",
                "deprecatedAt": "2026-01-01T00:00:00Z",
                "sunsetAt": "2027-01-01T00:00:00Z",
            },
            {
                "version": "v1",
                "deprecatedAt": "2026-02-01T00:00:00Z",
                "sunsetAt": "2027-01-01T00:00:00Z",
            },
        ],
        "spec.versioning",
        "versioning.deprecated must not repeat a version",
    ),
    (
        "minimal",
        "spec.versioning.deprecated",
        [
            {
                "version": "v1",
                "deprecatedAt": "2026-01-01T00:00:00Z",
                "sunsetAt": "2027-01-01T00:00:00Z",
                "link": "http://x",
            }
        ],
        "spec.versioning.deprecated.0.link",
        "should match pattern",
    ),
    (
        "minimal",
        "spec.observability.otelCollector",
        {"enabled": True},
        "spec.observability.otelCollector",
        "otelCollector.endpoint is required when the collector sidecar is enabled;"
        " set it, or set enabled: false",
    ),
    ("minimal", "spec.observability", {}, "spec.observability.otelCollector", "Field required"),
    (
        "minimal",
        "spec.observability.tracing.samplingRatio",
        1.5,
        "spec.observability.tracing.samplingRatio",
        "less than or equal to 1",
    ),
    (
        "minimal",
        "spec.observability.serviceMonitor.interval",
        "30 seconds",
        "spec.observability.serviceMonitor.interval",
        "should match pattern",
    ),
    (
        "minimal",
        "spec.observability.logLevel",
        "TRACE",
        "spec.observability.logLevel",
        "'DEBUG', 'INFO', 'WARNING' or 'ERROR'",
    ),
    (
        "full",
        "spec.queue.workers",
        [{"name": "a", "queues": ["q"]}, {"name": "a", "queues": ["r"]}],
        "spec.queue",
        "queue.workers must not repeat a name",
    ),
    (
        "full",
        "spec.queue.workers",
        [{"name": "a", "queues": []}],
        "spec.queue.workers.0.queues",
        "at least 1 item",
    ),
    (
        "full",
        "spec.queue.workers",
        [{"name": "Orders", "queues": ["q"]}],
        "spec.queue.workers.0.name",
        "should match pattern",
    ),
    (
        "full",
        "spec.queue.workers",
        [{"name": "a", "queues": ["q"], "autoscaling": {"minReplicas": 0, "maxReplicas": 2}}],
        "spec.queue.workers.0.autoscaling",
        "minReplicas 0 needs scaler QueueLength: a HorizontalPodAutoscaler cannot scale to zero",
    ),
    (
        "full",
        "spec.queue.workers",
        [
            {"name": "a", "queues": ["q"], "replicas": 0},
            {
                "name": "b",
                "queues": ["r"],
                "autoscaling": {"scaler": "QueueLength", "minReplicas": 0, "maxReplicas": 2},
            },
        ],
        "spec.queue",
        "queue.workers needs a group that never scales to zero: the outbox relay runs in the"
        " workers, and with none running nothing is published",
    ),
    (
        "full",
        "spec.queue.workers",
        [{"name": "a", "queues": ["q"], "replicas": 16}],
        "spec",
        "exceed database.connectionBudget",
    ),
    ("full", "spec.queue.secretRef", None, "spec.queue.secretRef", "valid dictionary"),
    (
        "minimal",
        "metadata.name",
        "Shop",
        "(object)",
        "metadata.name must be a DNS-1035 label",
    ),
    (
        "minimal",
        "metadata.name",
        "s" * 64,
        "(object)",
        "metadata.name must be a DNS-1035 label",
    ),
    (
        "minimal",
        "metadata.name",
        "9shop",
        "(object)",
        "metadata.name must be a DNS-1035 label",
    ),
]


@pytest.mark.parametrize(
    ("base", "path", "value", "where", "message"),
    INVALID,
    ids=[f"{c[1]}={c[2]!r}"[:80] for c in INVALID],
)
def test_invalid_spec_is_rejected_with_a_clear_message(
    base: str, path: str, value: Any, where: str, message: str
) -> None:
    body = set_path(minimal() if base == "minimal" else full(), path, value)
    found = errors_of(body)
    locations = {loc or "(object)" for loc, _ in found}
    assert where in locations, found
    assert any(message in msg for loc, msg in found if (loc or "(object)") == where), found


def test_every_rule_has_an_invalid_case() -> None:
    """A new cross-field rule must come with a case above that shows its message."""
    tested = " ".join(case[4] for case in INVALID)
    for rule in all_rules():
        assert rule.message[:30] in tested, f"no invalid case for rule {rule.message!r}"


def all_rules() -> list[model.Rule]:
    rules: list[model.Rule] = list(model.BackendService.root_rules)
    pending: list[type[model.ApiModel]] = [model.ApiModel]
    while pending:
        cls = pending.pop()
        rules.extend(r for r in cls.__dict__.get("rules", ()) if r not in rules)
        pending.extend(cls.__subclasses__())
    return rules


def test_wrong_kind_or_api_version_is_rejected() -> None:
    with pytest.raises(ValidationError):
        model.parse({**minimal(), "apiVersion": "adbm.io/v1"})
    with pytest.raises(ValidationError):
        model.parse({**minimal(), "kind": "Deployment"})


def test_the_model_imports_nothing_else_of_the_operator() -> None:
    """The API types are the bottom layer: specs, handlers and the CLI build on them."""
    import ast
    from pathlib import Path

    package = Path(model.__file__).parent
    imported = set()
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level > 1:
                    imported.add("." * node.level + (node.module or ""))
                elif node.level == 0 and node.module:
                    imported.add(node.module)
    assert [m for m in imported if m.startswith(("adbm_operator", ".."))] == []
    assert len(list(package.glob("*.py"))) >= 6
