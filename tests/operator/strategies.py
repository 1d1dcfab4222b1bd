"""Hypothesis strategies for BackendService bodies as a user writes them (camelCase dicts).

`backend_services()` draws bodies that `model.parse` accepts, spread over the whole API: every
optional section absent or present, autoscaling on and off for the API and each worker group
(CPU and QueueLength), collector and ServiceMonitor on and off, rate-limit routes, deprecated
versions, names up to 63 characters (so child names get truncated), and resource quantities in
several notations. Values are constructed to satisfy the model's rules rather than filtered, so
nearly every draw is usable.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

from adbm_operator.model import defaults

_LOWER_ALNUM = string.ascii_lowercase + string.digits
_ALNUM = string.ascii_letters + string.digits


def _dns_label(min_size: int = 1, max_size: int = 63, *, first: str = _LOWER_ALNUM) -> Any:
    """A DNS-1123 label (DNS-1035 when `first` is letters only), biased to hit `max_size`."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        size = draw(st.one_of(st.integers(min_size, max_size), st.just(max_size)))
        head = draw(st.sampled_from(first))
        if size == 1:
            return head
        middle = draw(st.text(_LOWER_ALNUM + "-", min_size=size - 2, max_size=size - 2))
        return head + middle + draw(st.sampled_from(_LOWER_ALNUM))

    return build()


def dns_1035_label(min_size: int = 1, max_size: int = 63) -> Any:
    return _dns_label(min_size, max_size, first=string.ascii_lowercase)


def _sql_identifier(max_size: int = 30) -> Any:
    return st.from_regex(rf"[a-z_][a-z0-9_]{{0,{max_size - 1}}}", fullmatch=True)


def secret_ref(*, with_key: bool = True) -> Any:
    name = st.from_regex(
        r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?(\.[a-z0-9]{1,8}){0,2}", fullmatch=True
    )
    ref = {"name": name}
    optional = {"key": st.from_regex(r"[-._a-zA-Z0-9]{1,20}", fullmatch=True)} if with_key else {}
    return st.fixed_dictionaries(ref, optional=optional)


def _coin(draw: st.DrawFn) -> bool:
    flip: bool = draw(st.booleans())
    return flip


# --- quantities --------------------------------------------------------------------------------

# Equal amounts written differently: the model and the builders must not care which notation.
_CPU_NOTATIONS = {
    "m": lambda milli: f"{milli}m",
    "cores": lambda milli: str(milli // 1000) if milli % 1000 == 0 else f"{milli / 1000:g}",
    "exponent": lambda milli: f"{milli}e-3",
}
_MEMORY_NOTATIONS = {
    "Mi": lambda mib: f"{mib}Mi",
    "Ki": lambda mib: f"{mib * 1024}Ki",
    "bytes": lambda mib: str(mib * 2**20),
    # Only quarter GiBs, which a short decimal states exactly.
    "Gi": lambda mib: f"{mib / 1024:g}Gi" if mib % 256 == 0 else f"{mib}Mi",
    "exponent": lambda mib: f"{mib * 2**20}e0",
}


def _cpu(milli: int) -> Any:
    return st.sampled_from(sorted(_CPU_NOTATIONS)).map(lambda n: _CPU_NOTATIONS[n](milli))


def _memory(mib: int) -> Any:
    return st.sampled_from(sorted(_MEMORY_NOTATIONS)).map(lambda n: _MEMORY_NOTATIONS[n](mib))


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    """A `resources` section with requests within limits (the API server rejects the rest),
    each part optional, in mixed notations."""
    cpu_req = draw(st.integers(1, 4000))
    mem_req = draw(st.integers(16, 4096))
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if draw(st.booleans()):
        requests["cpu"] = draw(_cpu(cpu_req))
    if draw(st.booleans()):
        requests["memory"] = draw(_memory(mem_req))
    if draw(st.booleans()):
        limits["cpu"] = draw(_cpu(cpu_req + draw(st.integers(0, 4000))))
    if draw(st.booleans()):
        limits["memory"] = draw(_memory(mem_req + draw(st.integers(0, 4096))))
    section: dict[str, Any] = {}
    if requests or _coin(draw):
        section["requests"] = requests
    if limits or _coin(draw):
        section["limits"] = limits
    return section


# --- spec sections -----------------------------------------------------------------------------


@st.composite
def autoscaling(draw: st.DrawFn, *, max_replicas: int) -> dict[str, Any]:
    high = draw(st.integers(1, max_replicas))
    section: dict[str, Any] = {"maxReplicas": high}
    if draw(st.booleans()):
        section["minReplicas"] = draw(st.integers(1, high))
    if draw(st.booleans()):
        section["targetCpuUtilizationPercentage"] = draw(st.integers(1, 100))
    return section


@st.composite
def worker_autoscaling(draw: st.DrawFn, *, max_replicas: int) -> dict[str, Any]:
    scaler = draw(st.sampled_from(["CPU", "QueueLength", None]))
    high = draw(st.integers(1, max_replicas))
    section: dict[str, Any] = {"maxReplicas": high}
    if scaler is not None:
        section["scaler"] = scaler
    # Scale to zero is for the QueueLength scaler only; CPU (the default) needs one replica.
    low = 0 if scaler == "QueueLength" else 1
    if draw(st.booleans()):
        section["minReplicas"] = draw(st.integers(low, high))
    if draw(st.booleans()):
        section["targetCpuUtilizationPercentage"] = draw(st.integers(1, 100))
    if scaler == "QueueLength" and draw(st.booleans()):
        section["targetQueueLength"] = draw(st.integers(1, 1_000_000))
    return section


def _queue_name() -> Any:
    return st.from_regex(r"[A-Za-z0-9._:-]{1,40}", fullmatch=True)


@st.composite
def worker_group(draw: st.DrawFn, name: str, *, max_replicas: int) -> dict[str, Any]:
    group: dict[str, Any] = {
        "name": name,
        "queues": draw(st.lists(_queue_name(), min_size=1, max_size=3, unique=True)),
    }
    if draw(st.booleans()):
        group["replicas"] = draw(st.integers(0, max_replicas))
    if draw(st.booleans()):
        group["prefetch"] = draw(st.integers(1, 1000))
    if draw(st.booleans()):
        group["resources"] = draw(resources())
    if draw(st.booleans()):
        group["autoscaling"] = draw(worker_autoscaling(max_replicas=max_replicas))
    return group


@st.composite
def queue(draw: st.DrawFn, *, max_replicas: int) -> dict[str, Any]:
    names = draw(st.lists(dns_1035_label(1, 30), max_size=4, unique=True))
    section: dict[str, Any] = {"secretRef": draw(secret_ref())}
    if names or _coin(draw):
        workers = [draw(worker_group(n, max_replicas=max_replicas)) for n in names]
        if workers and not any(_keeps_a_replica(w) for w in workers):
            # The relay rule: one group must never scale to zero (the outbox relay runs there).
            kept = workers[draw(st.integers(0, len(workers) - 1))]
            if "autoscaling" in kept:
                scaling = kept["autoscaling"]
                scaling["minReplicas"] = draw(st.integers(1, scaling["maxReplicas"]))
            else:
                kept["replicas"] = draw(st.integers(1, max_replicas))
        section["workers"] = workers
    return section


def _keeps_a_replica(group: dict[str, Any]) -> bool:
    if "autoscaling" in group:
        return bool(group["autoscaling"].get("minReplicas", defaults.MIN_REPLICAS) >= 1)
    return bool(group.get("replicas", defaults.WORKER_REPLICAS) >= 1)


_ROUTE_PATH = st.from_regex(r"/[A-Za-z0-9/_{}.-]{0,40}", fullmatch=True)
_METHODS = ["*", "GET", "POST", "PUT", "PATCH", "DELETE"]


@st.composite
def quota(draw: st.DrawFn) -> dict[str, Any]:
    return draw(
        st.fixed_dictionaries(
            {},
            optional={
                "requests": st.integers(1, 1_000_000),
                "periodSeconds": st.integers(1, 86_400),
                "burst": st.integers(1, 1_000_000),
            },
        )
    )


@st.composite
def rate_limit(draw: st.DrawFn) -> dict[str, Any]:
    section = draw(quota())
    section |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "algorithm": st.sampled_from(["GCRA", "TokenBucket"]),
                "scope": st.sampled_from(["Tenant", "ApiKey"]),
                "onRedisUnavailable": st.sampled_from(["FailOpen", "FailClosed"]),
            },
        )
    )
    keys = draw(
        st.lists(
            st.tuples(st.sampled_from(_METHODS), _ROUTE_PATH),
            max_size=5,
            unique=True,
        )
    )
    if keys or _coin(draw):
        routes = []
        for method, path in keys:
            route = {"path": path, **draw(quota())}
            # `*` is the default method: leave it out sometimes, as a user would.
            if method != "*" or draw(st.booleans()):
                route["method"] = method
            routes.append(route)
        section["routes"] = routes
    return section


_TIMEZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))])


def _timestamp() -> Any:
    return st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=_TIMEZONES
    )


@st.composite
def versioning(draw: st.DrawFn) -> dict[str, Any]:
    numbers = draw(st.lists(st.integers(1, 999), min_size=1, max_size=5, unique=True))
    current, *old = [f"v{n}" for n in numbers]
    section: dict[str, Any] = {}
    # Left out, `current` is v2; the numbers are unique, so no deprecated version equals it.
    if current != "v2" or draw(st.booleans()):
        section["current"] = current
    deprecated = []
    for version in old:
        deprecated_at = draw(_timestamp())
        sunset_at = deprecated_at + draw(st.timedeltas(timedelta(0), timedelta(days=730)))
        entry = {
            "version": version,
            "deprecatedAt": deprecated_at.isoformat(),
            "sunsetAt": sunset_at.astimezone(draw(_TIMEZONES)).isoformat(),
        }
        if draw(st.booleans()):
            entry["link"] = "https://docs.example.com/" + draw(st.text(_ALNUM, max_size=20))
        deprecated.append(entry)
    if deprecated or _coin(draw):
        section["deprecated"] = deprecated
    return section


_DURATIONS = st.one_of(
    st.sampled_from(["30s", "15s", "1m", "5s", "10s", "1m30s", "500ms", "2h", "1s500ms"]),
    st.integers(1, 600).map(lambda s: f"{s}s"),
)


def _label_key() -> Any:
    name = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True)
    prefix = st.sampled_from(["", "example.com/", "team.example.org/"])
    # Keys under the operator's own prefixes, which a user label must not override.
    reserved = st.sampled_from(
        ["app.kubernetes.io/name", "app.kubernetes.io/instance", "adbm.io/backendservice"]
    )
    return st.one_of(st.tuples(prefix, name).map("".join), reserved, st.just("release"))


def _label_value() -> Any:
    return st.from_regex(r"(([A-Za-z0-9][-A-Za-z0-9_.]{0,30})?[A-Za-z0-9])?", fullmatch=True)


@st.composite
def service_monitor(draw: st.DrawFn) -> dict[str, Any]:
    section: dict[str, Any] = {}
    enabled = draw(st.sampled_from([True, True, False]))
    if not enabled or _coin(draw):
        section["enabled"] = enabled
    if _coin(draw):
        section["interval"] = draw(_DURATIONS)
    if _coin(draw):
        section["labels"] = draw(st.dictionaries(_label_key(), _label_value(), max_size=3))
    return section


@st.composite
def observability(draw: st.DrawFn) -> dict[str, Any]:
    collector: dict[str, Any] = {}
    enabled = draw(st.booleans())
    if not enabled:
        collector["enabled"] = False
    elif draw(st.booleans()):
        collector["enabled"] = True
    if enabled or _coin(draw):
        collector["endpoint"] = draw(
            st.sampled_from(
                [
                    "otel-gateway.observability.svc:4317",
                    "tempo-distributor.observability:4317",
                    "https://otlp.example.com:4318",
                    "collector:4318",
                ]
            )
        )
    collector |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "protocol": st.sampled_from(["grpc", "http"]),
                "insecure": st.booleans(),
                "resources": resources(),
                "image": st.just("otel/opentelemetry-collector-contrib:0.140.0"),
            },
        )
    )
    section: dict[str, Any] = {"otelCollector": collector}
    section |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "logLevel": st.sampled_from(["DEBUG", "INFO", "WARNING", "ERROR"]),
                "tracing": st.fixed_dictionaries(
                    {}, optional={"samplingRatio": st.floats(0, 1, allow_nan=False)}
                ),
                "serviceMonitor": service_monitor(),
            },
        )
    )
    return section


# --- the whole object --------------------------------------------------------------------------


def _pods(spec: dict[str, Any]) -> int:
    """API and worker pods at their autoscaling maximum, as `model.max_connections` counts."""

    def most(section: dict[str, Any], default: int) -> int:
        scaling = section.get("autoscaling")
        return int(scaling["maxReplicas"]) if scaling else int(section.get("replicas", default))

    pods = most(spec, 2)
    for group in (spec.get("queue") or {}).get("workers", []):
        pods += most(group, 1)
    return pods


@st.composite
def database(draw: st.DrawFn, *, pods: int) -> dict[str, Any]:
    section: dict[str, Any] = {
        "name": draw(_sql_identifier()),
        "adminSecretRef": draw(secret_ref()),
    }
    # Pool size after the workloads, so the connection budget (at most 100000) can hold them.
    top = max(1, min(100, 100_000 // pods))
    max_size = draw(st.integers(1, top))
    pool: dict[str, Any] = {}
    if max_size != 10 or draw(st.booleans()):
        pool["maxSize"] = max_size
    if draw(st.booleans()):
        pool["minSize"] = draw(st.integers(0, max_size))
    if draw(st.booleans()):
        pool["acquireTimeoutSeconds"] = draw(st.floats(0.001, 60, allow_nan=False))
    if pool or _coin(draw):
        section["pool"] = pool
    needed = pods * (pool.get("maxSize", 10))
    if needed > 100 or draw(st.booleans()):
        section["connectionBudget"] = draw(st.integers(max(1, needed), 100_000))
    section |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "appRole": _sql_identifier(),
                "deletionPolicy": st.sampled_from(["Retain", "Delete"]),
                "rowLevelSecurity": st.fixed_dictionaries(
                    {},
                    optional={
                        "tenantSetting": st.just("app.tenant_id") | st.just("acme.tenant"),
                        "tenantColumn": _sql_identifier(),
                        "tables": st.lists(_sql_identifier(), min_size=1, max_size=6, unique=True),
                    },
                ),
            },
        )
    )
    return section


@st.composite
def backend_services(draw: st.DrawFn) -> dict[str, Any]:
    """A BackendService body that `model.parse` accepts."""
    # Small replica counts usually, the model's maximum sometimes.
    max_replicas = draw(st.sampled_from([5, 20, 1000]))
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["replicas"] = draw(st.integers(1, max_replicas))
    if draw(st.booleans()):
        spec["autoscaling"] = draw(autoscaling(max_replicas=max_replicas))
    if draw(st.booleans()):
        spec["queue"] = draw(queue(max_replicas=max_replicas))
    spec["database"] = draw(database(pods=_pods(spec)))
    spec["redis"] = draw(
        st.fixed_dictionaries(
            {"secretRef": secret_ref()},
            optional={"keyPrefix": st.from_regex(r"[A-Za-z0-9:_.-]{1,40}", fullmatch=True)},
        )
    )
    spec["observability"] = draw(observability())
    spec |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "image": st.sampled_from(
                    [
                        "adbm/reference-service:0.1.0",
                        "registry.example.com/team/app@sha256:" + "a" * 64,
                    ]
                ),
                "imagePullPolicy": st.sampled_from(["Always", "IfNotPresent", "Never"]),
                "resources": resources(),
                "rateLimit": rate_limit(),
                "idempotency": st.fixed_dictionaries(
                    {}, optional={"ttlSeconds": st.integers(60, 604_800)}
                ),
                "versioning": versioning(),
                "paused": st.booleans(),
            },
        )
    )
    metadata: dict[str, Any] = {"name": draw(dns_1035_label())}
    if draw(st.booleans()):
        metadata["namespace"] = draw(_dns_label())
    if draw(st.booleans()):
        metadata["labels"] = {"team": draw(_label_value())}
    return {
        "apiVersion": "adbm.io/v1alpha1",
        "kind": "BackendService",
        "metadata": metadata,
        "spec": spec,
    }
