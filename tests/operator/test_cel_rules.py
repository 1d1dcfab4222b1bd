"""Every CEL rule agrees with its Python predicate, on the JSON the API server would evaluate.

The API server runs the CEL; `adbm-operator render` and the operator run the Python. Both are
evaluated here on the same samples (camelCase, defaults applied, unset optionals absent), with
celpy standing in for the API server's CEL.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

import pytest
from celpy import celtypes
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError

from adbm_operator import model
from adbm_operator.crd import build_crd, openapi_schema
from adbm_operator.model import ApiModel, Rule
from tests.operator.cel import cel_holds, program, rule_outcomes

Schema = dict[str, Any]


# --- CEL evaluation: tests/operator/cel.py ---------------------------------------------------


def as_api_server_sees(obj: BaseModel) -> Any:
    return obj.model_dump(mode="json", by_alias=True, exclude_none=True)


def rules_of(obj: BaseModel) -> tuple[Rule, ...]:
    if isinstance(obj, model.BackendService):
        return model.BackendService.root_rules
    assert isinstance(obj, ApiModel)
    return type(obj).rules


def check(obj: BaseModel) -> None:
    sample = as_api_server_sees(obj)
    for rule in rules_of(obj):
        assert cel_holds(rule.cel, sample) == rule.holds(obj), (rule.message, sample)


def test_cel_sum_matches_kubernetes() -> None:
    assert cel_holds("self.sum() == 0", [])
    assert cel_holds("self.sum() == 6", [1, 2, 3])
    assert cel_holds("self.map(x, x * 2).sum() == 12", [1, 2, 3])
    assert cel_holds("self.sum() == 1.5", [0.5, 1.0])


# --- every rule --------------------------------------------------------------------------------


def api_models() -> list[type[ApiModel]]:
    found: list[type[ApiModel]] = []
    todo: list[type[ApiModel]] = [ApiModel]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith(f"{model.__name__}.") and sub not in found:
                found.append(sub)
                todo.append(sub)
    return found


RULED: list[tuple[type[BaseModel], Rule]] = [
    (cls, rule) for cls in api_models() for rule in cls.rules
] + [(model.BackendService, rule) for rule in model.BackendService.root_rules]


def test_rules_are_collected() -> None:
    owners = {cls.__name__ for cls, _ in RULED}
    assert owners == {
        "Autoscaling",
        "WorkerAutoscaling",
        "Pool",
        "RowLevelSecurity",
        "RateLimit",
        "DeprecatedVersion",
        "Versioning",
        "Queue",
        "OtelCollector",
        "Resources",
        "ServiceMonitorSpec",
        "BackendServiceSpec",
        "BackendService",
    }


@pytest.mark.parametrize(
    "rule", [r for _, r in RULED], ids=[f"{c.__name__}:{r.message[:40]}" for c, r in RULED]
)
def test_rule_compiles(rule: Rule) -> None:
    program(rule.cel)
    assert rule.message.strip() and "\n" not in rule.message


# --- hand-picked samples: each rule both holds and fails -------------------------------------

SECRET = model.SecretKeyRef(name="secret")
T0 = datetime(2025, 1, 1, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def spec(**update: Any) -> model.BackendServiceSpec:
    base = model.BackendServiceSpec(
        database=model.Database(name="shop", admin_secret_ref=SECRET),
        redis=model.Redis(secret_ref=SECRET),
        observability=model.Observability(
            otel_collector=model.OtelCollector(endpoint="tempo:4317")
        ),
    )
    return base.model_copy(update=update)


def workers(*groups: tuple[str, int, int | None]) -> model.Queue:
    # Built without the Queue's own rules, so that samples which break one (every group able
    # to scale to zero) can still be handed to both the CEL and the Python side of it.
    return model.Queue.model_construct(
        secret_ref=SECRET,
        workers=[
            model.WorkerGroup(
                name=name,
                queues=["q"],
                replicas=replicas,
                autoscaling=None if most is None else model.WorkerAutoscaling(max_replicas=most),
            )
            for name, replicas, most in groups
        ],
    )


def deprecated(version: str, at: datetime, sunset: datetime) -> model.DeprecatedVersion:
    return model.DeprecatedVersion.model_construct(
        version=version, deprecated_at=at, sunset_at=sunset, link=None
    )


def resources(requests: dict[str, str], limits: dict[str, str]) -> model.Resources:
    """Built without validation, so samples can break the rules."""
    return model.Resources.model_construct(
        requests=model.ResourceList(**requests), limits=model.ResourceList(**limits)
    )


def route(method: model.HttpMethod, path: str) -> model.RouteRateLimit:
    return model.RouteRateLimit(method=method, path=path)


def named(name: str) -> model.BackendService:
    return model.BackendService(metadata=model.ObjectMeta(name="shop"), spec=spec()).model_copy(
        update={"metadata": model.ObjectMeta(name=name)}
    )


GET, POST = model.HttpMethod.GET, model.HttpMethod.POST
QUEUE_LENGTH, CPU = model.WorkerScaler.QUEUE_LENGTH, model.WorkerScaler.CPU
budget_spec = spec(
    autoscaling=model.Autoscaling(max_replicas=5), queue=workers(("a", 2, None), ("b", 9, 3))
)

SAMPLES: list[BaseModel] = [
    model.Autoscaling(max_replicas=3),
    model.Autoscaling(min_replicas=3, max_replicas=3),
    model.Autoscaling(max_replicas=2).model_copy(update={"min_replicas": 5}),
    model.WorkerAutoscaling(max_replicas=3),
    model.WorkerAutoscaling(min_replicas=0, max_replicas=3, scaler=QUEUE_LENGTH),
    model.WorkerAutoscaling(max_replicas=3).model_copy(update={"min_replicas": 0}),
    model.WorkerAutoscaling(max_replicas=2, scaler=QUEUE_LENGTH).model_copy(
        update={"min_replicas": 5}
    ),
    model.Pool(),
    model.Pool(min_size=10, max_size=10),
    model.Pool(max_size=10).model_copy(update={"min_size": 11}),
    model.RowLevelSecurity(),
    model.RowLevelSecurity().model_copy(update={"tables": ["orders", "outbox", "orders"]}),
    model.RateLimit(routes=[route(GET, "/a"), route(POST, "/a"), route(GET, "/b")]),
    model.RateLimit().model_copy(update={"routes": [route(GET, "/a"), route(GET, "/a")]}),
    # The same instant written with two offsets.
    deprecated("v1", T0, datetime(2025, 1, 1, 2, tzinfo=PLUS_TWO)),
    deprecated("v1", T0, T0 + timedelta(days=90)),
    deprecated("v1", T0, T0 - timedelta(seconds=1)),
    # Earlier as an instant, later as a string: catches a rule that compares text.
    deprecated(
        "v1", datetime(2024, 12, 31, 23, 30, tzinfo=UTC), datetime(2025, 1, 1, 1, tzinfo=PLUS_TWO)
    ),
    model.Versioning(deprecated=[deprecated("v1", T0, T0)]),
    model.Versioning(current="v3", deprecated=[deprecated("v1", T0, T0), deprecated("v2", T0, T0)]),
    model.Versioning().model_copy(
        update={"current": "v1", "deprecated": [deprecated("v1", T0, T0)]}
    ),
    model.Versioning().model_copy(
        update={"deprecated": [deprecated("v1", T0, T0), deprecated("v1", T0, T0)]}
    ),
    workers(("a", 1, None), ("b", 1, None)),
    workers(("a", 0, None)),  # no group keeps a replica: nothing would run the outbox relay
    workers(("a", 1, None)).model_copy(update={"workers": workers(("a", 1, None)).workers * 2}),
    model.Resources(),
    resources(requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "1000m", "memory": "1Gi"}),
    resources(requests={"cpu": "250m"}, limits={"memory": "1Gi"}),
    # 1Gi is more than 1G: a rule comparing text, or ignoring suffixes, gets these wrong.
    resources(requests={"memory": "1G"}, limits={"memory": "1Gi"}),
    resources(requests={"memory": "1Gi"}, limits={"memory": "1G"}),
    resources(requests={"cpu": "1500m"}, limits={"cpu": "1"}),
    resources(requests={"cpu": "2e0"}, limits={"cpu": "1"}),
    model.ServiceMonitorSpec(),
    model.ServiceMonitorSpec(interval="1m0s"),
    model.ServiceMonitorSpec().model_copy(update={"interval": "0s"}),
    model.ServiceMonitorSpec().model_copy(update={"interval": "0m00s"}),
    model.OtelCollector(endpoint="tempo:4317"),
    model.OtelCollector(enabled=False),
    model.OtelCollector(enabled=False).model_copy(update={"enabled": True}),
    spec(),
    # (5 API + 2 + 3 worker replicas) * maxSize 10 = 100: exactly the default budget.
    budget_spec,
    budget_spec.model_copy(
        update={"database": budget_spec.database.model_copy(update={"connection_budget": 99})}
    ),
    spec(replicas=11),
    spec(queue=workers(("relay", 1, None), ("a", 0, None))),
    named("shop"),
    named("a" * 63),
    named("a1-b2"),
    named("Shop"),
    named("1shop"),
    named("shop-"),
    named("my.shop"),
    named("a" * 64),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=[type(s).__name__ for s in SAMPLES])
def test_cel_agrees_with_python(sample: BaseModel) -> None:
    check(sample)


@pytest.mark.parametrize(
    ("cls", "rule"), RULED, ids=[f"{c.__name__}:{r.message[:40]}" for c, r in RULED]
)
def test_each_rule_is_seen_holding_and_failing(cls: type[BaseModel], rule: Rule) -> None:
    outcomes = {rule.holds(s) for s in SAMPLES if type(s) is cls}
    assert outcomes == {True, False}, (
        f"add samples of {cls.__name__} where the rule holds and fails"
    )


@pytest.mark.parametrize("sample", SAMPLES, ids=[type(s).__name__ for s in SAMPLES])
def test_samples_are_invalid_only_through_their_rules(sample: BaseModel) -> None:
    """A failing sample must fail on the rule alone, or it would test nothing about the rule."""
    failing = [r.message_for(sample) for r in rules_of(sample) if not r.holds(sample)]
    body = sample.model_dump(mode="json", by_alias=True)
    if not failing:
        type(sample).model_validate(body)
        return
    with pytest.raises(ValidationError) as caught:
        type(sample).model_validate(body)
    assert {e["msg"].removeprefix("Value error, ") for e in caught.value.errors()} <= set(failing)


# --- generated samples for the numeric and ordering rules ------------------------------------


# celpy is slow on a loaded machine, and a per-example deadline is a timing check, not a result.
no_deadline = settings(deadline=None)


@no_deadline
@given(st.integers(1, 1000), st.integers(1, 1000))
def test_autoscaling_bounds(least: int, most: int) -> None:
    check(model.Autoscaling.model_construct(min_replicas=least, max_replicas=most))


@no_deadline
@given(st.integers(0, 1000), st.integers(1, 1000), st.sampled_from(model.WorkerScaler))
def test_worker_autoscaling_bounds(least: int, most: int, scaler: model.WorkerScaler) -> None:
    check(
        model.WorkerAutoscaling.model_construct(
            min_replicas=least, max_replicas=most, scaler=scaler
        )
    )


@no_deadline
@given(st.integers(0, 100), st.integers(1, 100))
def test_pool_sizes(least: int, most: int) -> None:
    check(model.Pool.model_construct(min_size=least, max_size=most))


autoscaling_max = st.none() | st.integers(1, 1000)


@st.composite
def budgeted_specs(draw: st.DrawFn) -> model.BackendServiceSpec:
    api_max = draw(autoscaling_max)
    groups = draw(st.lists(st.tuples(st.integers(0, 1000), autoscaling_max), max_size=5))
    queue = None
    with_queue = draw(st.booleans())
    if groups or with_queue:
        queue = workers(*((f"w{i}", replicas, most) for i, (replicas, most) in enumerate(groups)))
    unbudgeted = spec(
        replicas=draw(st.integers(1, 1000)),
        autoscaling=None if api_max is None else model.Autoscaling(max_replicas=api_max),
        queue=queue,
        database=spec().database.model_copy(
            update={"pool": model.Pool(min_size=0, max_size=draw(st.integers(1, 100)))}
        ),
    )
    # Budgets right at the boundary are where an off-by-one would show.
    needed = model.max_connections(unbudgeted)
    budget = draw(st.sampled_from([needed - 1, needed, needed + 1]) | st.integers(1, 100_000))
    budget = min(max(budget, 1), 100_000)
    database = unbudgeted.database.model_copy(update={"connection_budget": budget})
    return unbudgeted.model_copy(update={"database": database})


@no_deadline
@given(budgeted_specs())
def test_connection_budget(sample: model.BackendServiceSpec) -> None:
    check(sample)


offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.builds(
    lambda at, tz: at.replace(tzinfo=UTC).astimezone(tz),
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1)),
    offsets,
)


@no_deadline
@given(instants, instants | instants.map(lambda t: t.astimezone(UTC)))
def test_sunset_not_before_deprecation(at: datetime, sunset: datetime) -> None:
    check(deprecated("v1", at, sunset))


@no_deadline
@given(st.lists(st.sampled_from(["orders", "outbox", "accounts"]), min_size=1, max_size=6))
def test_table_uniqueness(tables: list[str]) -> None:
    check(model.RowLevelSecurity.model_construct(tables=tables))


@no_deadline
@given(st.lists(st.tuples(st.sampled_from([GET, POST]), st.sampled_from(["/a", "/b"])), max_size=5))
def test_route_uniqueness(keys: list[tuple[model.HttpMethod, str]]) -> None:
    check(model.RateLimit.model_construct(routes=[route(m, p) for m, p in keys]))


@no_deadline
@given(
    st.sampled_from(["v2", "v3"]),
    st.lists(st.sampled_from(["v1", "v2", "v3"]), max_size=4),
)
def test_versioning_rules(current: str, versions: list[str]) -> None:
    check(
        model.Versioning.model_construct(
            current=current, deprecated=[deprecated(v, T0, T0) for v in versions]
        )
    )


@no_deadline
@given(st.lists(st.sampled_from(["a", "b", "c"]), max_size=4))
def test_worker_name_uniqueness(names: list[str]) -> None:
    groups = [model.WorkerGroup(name=n, queues=["q"]) for n in names]
    check(model.Queue.model_construct(secret_ref=SECRET, workers=groups))


# RE2 and Python's `re` differ on line ends, so names keep to characters a name could carry.
@no_deadline
@given(st.text(alphabet="abzAZ09-._", min_size=1, max_size=70))
def test_name_rule(name: str) -> None:
    check(named(name))


# --- the rules in place in the CRD -----------------------------------------------------------


def crd_rule_results(schema: Schema, value: Any, path: str = "") -> Iterator[tuple[str, str, bool]]:
    """(path, message, holds) of every rule the API server evaluates on this value."""
    for where, message, result in rule_outcomes(schema, value, path):
        assert isinstance(result, celtypes.BoolType), f"{where}: {message}: {result!r}"
        yield where, message, bool(result)


def failures(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p, m) for p, m, ok in crd_rule_results(ROOT, body) if not ok}


ROOT: Schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def full_object() -> dict[str, Any]:
    obj = model.BackendService(
        metadata=model.ObjectMeta(name="shop"),
        spec=spec(
            autoscaling=model.Autoscaling(max_replicas=3),
            queue=workers(("mail", 1, None), ("bulk", 0, 2)),
            rate_limit=model.RateLimit(routes=[route(GET, "/api/v2/orders")]),
            versioning=model.Versioning(
                deprecated=[deprecated("v1", T0, datetime(2025, 6, 1, 2, tzinfo=PLUS_TWO))]
            ),
        ),
    )
    return model.with_defaults(obj)


def test_a_valid_object_passes_every_rule_in_the_crd() -> None:
    results = list(crd_rule_results(ROOT, full_object()))
    # 13 model rules (the queue's relay rule included) + 2 key rules on the labels map + 2 on
    # each of 3 `resources` nodes + ...
    assert len(results) == 25
    assert all(ok for _, _, ok in results), [r for r in results if not r[2]]


def mutated(path: str, value: Any) -> dict[str, Any]:
    body = full_object()
    *parents, leaf = path.split(".")
    node: Any = body
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node[leaf] = value
    return body


AUTOSCALING_MESSAGE = model.Autoscaling.rules[0].message
ZERO_MESSAGE = model.WorkerAutoscaling.rules[1].message


@pytest.mark.parametrize(
    ("path", "value", "failed"),
    [
        ("spec.database.connectionBudget", 10, ("spec", model.BackendServiceSpec.rules[0].message)),
        ("spec.autoscaling.minReplicas", 4, ("spec.autoscaling", AUTOSCALING_MESSAGE)),
        (
            "spec.queue.workers.1.autoscaling.minReplicas",
            0,
            ("spec.queue.workers[1].autoscaling", ZERO_MESSAGE),
        ),
        (
            "spec.versioning.deprecated.0.sunsetAt",
            "2024-12-31T23:59:59Z",
            ("spec.versioning.deprecated[0]", model.DeprecatedVersion.rules[0].message),
        ),
        (
            "spec.observability.otelCollector.endpoint",
            None,
            ("spec.observability.otelCollector", model.OtelCollector.rules[0].message),
        ),
        ("metadata.name", "Shop", ("", model.BackendService.root_rules[0].message)),
        (
            "spec.observability.serviceMonitor.labels",
            {"not a label key": "v"},
            (
                "spec.observability.serviceMonitor.labels",
                f"every key must match {model.LABEL_KEY}",
            ),
        ),
    ],
    ids=["budget", "autoscaling", "worker-zero", "sunset", "collector", "name", "label-key"],
)
def test_an_invalid_object_fails_on_the_right_node(
    path: str, value: Any, failed: tuple[str, str]
) -> None:
    body = mutated(path, value)
    if value is None:
        *parents, leaf = path.split(".")
        del functools.reduce(operator.getitem, parents, body)[leaf]
    assert failures(body) == {failed}


class KeyedMap(BaseModel):
    tags: dict[Annotated[str, Field(pattern=r"^[a-z]+(\.io)?$", min_length=2, max_length=8)], int]


@pytest.mark.parametrize(
    "key", ["ab", "ab.io", "abcdefgh", "a", "abcdefghi", "ab.com", "AB", "ab\n"]
)
def test_generated_key_rules_agree_with_pydantic(key: str) -> None:
    """crd.py turns dict-key constraints into CEL; the API server must accept the same keys."""
    rules = openapi_schema(KeyedMap)["properties"]["tags"]["x-kubernetes-validations"]
    assert len(rules) == 3
    try:
        KeyedMap(tags={key: 1})
        accepted = True
    except ValidationError:
        accepted = False
    assert all(cel_holds(r["rule"], {key: 1}) for r in rules) == accepted
