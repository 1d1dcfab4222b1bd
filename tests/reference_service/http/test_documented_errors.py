"""The OpenAPI document tells the truth per operation: each lists exactly the error statuses it
can answer with, and each error path, driven for real against every operation, answers one of
the statuses and problem types that operation documents.

Driven through `create_app` on the real database and Redis; the 500 comes from a real fault
(a column renamed under the running service), the 503 from a Redis that is not there under
`FailClosed`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from reference_service.app import create_app
from reference_service.config import Settings
from reference_service.http.idempotency import canonical_body, fingerprint
from reference_service.policy import Policy, Quota, RateLimitPolicy
from tests.reference_service.conftest import DatabaseUrls
from tests.reference_service.http.conftest import Callers, OpenService, Service, place_order

PROBLEMS = "https://adbm.io/problems/"
MAX_BODY = 4096


def _document() -> dict[str, Any]:
    document: dict[str, Any] = create_app(Settings()).openapi()
    return document


@dataclass(frozen=True)
class Op:
    method: str
    template: str
    responses: dict[str, Any]
    parameters: list[dict[str, Any]]

    @property
    def version(self) -> str:
        return self.template.split("/")[2]

    @property
    def collection(self) -> str:
        return self.template.split("/")[3]

    @property
    def kind(self) -> str:
        if self.method == "POST":
            return "create"
        if self.method == "GET":
            return "get" if "{" in self.template else "list"
        return {"PATCH": "change", "DELETE": "delete"}[self.method]

    @property
    def idempotent(self) -> bool:
        return self.kind in ("create", "change")

    def url(self, item: Any = None) -> str:
        if "{" not in self.template:
            return self.template
        return self.template[: self.template.index("{")] + str(item)

    def documented(self, status: int, slug: str) -> bool:
        entry = self.responses.get(str(status))
        return entry is not None and f"({PROBLEMS}{slug})" in entry["description"]

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def _operations(document: dict[str, Any]) -> list[Op]:
    return [
        Op(method.upper(), path, op["responses"], op.get("parameters", []))
        for path, operations in document["paths"].items()
        if path.startswith("/api/")
        for method, op in operations.items()
    ]


OPERATIONS = _operations(_document())

# What each kind of operation can answer, independently of how the document is built.
EVERY = {400, 401, 413, 429, 500, 503}
# 415 only where a body is read.
EXPECTED_ERRORS = {
    "create": EVERY | {409, 415, 422},  # 409: in flight (and a taken sku); 422: a key reused
    "list": EVERY,
    "get": EVERY | {404},
    "change": EVERY | {404, 409, 412, 415, 422, 428},
    "delete": EVERY | {404, 412},
}


@pytest.mark.parametrize("op", OPERATIONS, ids=str)
def test_each_operation_documents_exactly_its_errors(op: Op) -> None:
    errors = {int(status) for status in op.responses if int(status) >= 400}
    assert errors == EXPECTED_ERRORS[op.kind]
    for status, entry in op.responses.items():
        if int(status) >= 400:
            assert list(entry["content"]) == ["application/problem+json"], status


@pytest.mark.parametrize("op", OPERATIONS, ids=str)
def test_required_headers_are_declared_required(op: Op) -> None:
    headers = {p["name"]: p["required"] for p in op.parameters if p["in"] == "header"}
    if op.idempotent:
        assert headers.pop("idempotency-key") is True
    if op.kind == "change":
        assert headers.pop("if-match") is True
    if op.kind == "delete":
        assert headers.pop("if-match") is False
    assert headers == {}


def test_conflicts_are_documented_where_a_unique_value_is_written() -> None:
    creates = {op.template: op for op in OPERATIONS if op.kind == "create"}
    for template, op in creates.items():
        assert op.documented(409, "conflict") == template.endswith("/products"), template
        assert op.documented(409, "idempotency-in-flight")


def test_no_framework_validation_shape_is_documented() -> None:
    text = json.dumps(_document())
    assert "HTTPValidationError" not in text
    assert '"405"' not in text


# Driving every error path -----------------------------------------------------------------

BODIES: dict[tuple[str, str, str], dict[str, Any]] = {
    ("v1", "products", "create"): {
        "sku": "MUG-1",
        "name": "Mug",
        "price_minor": 1200,
        "currency": "EUR",
    },
    ("v2", "products", "create"): {
        "sku": "MUG-1",
        "name": "Mug",
        "price": {"amount": 1200, "currency": "EUR"},
    },
    ("v1", "accounts", "create"): {"name": "Alice", "currency": "EUR"},
    ("v2", "accounts", "create"): {
        "name": "Alice",
        "balance": {"amount": 0, "currency": "EUR"},
    },
    ("v1", "products", "change"): {"name": "Cup"},
    ("v2", "products", "change"): {"name": "Cup"},
    ("v1", "accounts", "change"): {"name": "Bob"},
    ("v2", "accounts", "change"): {"name": "Bob"},
}


@dataclass
class World:
    """A service and one existing resource of each collection, for tenant a."""

    service: Service
    callers: Callers
    ids: dict[str, str]

    def body(self, op: Op) -> dict[str, Any] | None:
        return BODIES.get((op.version, op.collection, op.kind))

    async def send(
        self,
        op: Op,
        *,
        item: Any = None,
        auth: bool = True,
        key: str | None = "fresh",
        if_match: str | None = '"1"',
        body: dict[str, Any] | None = None,
        content: bytes | None = None,
        json_type: bool = False,
        query: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = dict(self.callers.a.headers) if auth else {}
        if op.idempotent and key is not None:
            headers["Idempotency-Key"] = uuid.uuid4().hex if key == "fresh" else key
        if op.kind in ("change", "delete") and if_match is not None:
            headers["If-Match"] = if_match
        if json_type:
            headers["Content-Type"] = "application/json"
        if content is None:
            sent = body if body is not None else self.body(op)
            if sent is not None:
                content = json.dumps(sent).encode()
                headers["Content-Type"] = "application/json"
        # A bare client: no hook adds keys behind the test's back.
        transport = httpx.ASGITransport(app=self.service.app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(
                op.method,
                op.url(item if item is not None else self.ids.get(op.collection)),
                headers=headers,
                content=content,
                params=query,
            )


async def _world(service: Service, callers: Callers) -> World:
    ids = {}
    for collection, body in (
        ("products", BODIES[("v1", "products", "create")]),
        ("accounts", BODIES[("v1", "accounts", "create")]),
    ):
        created = await service.client.post(
            f"/api/v1/{collection}", json=body, headers=callers.a.headers
        )
        assert created.status_code == 201, created.text
        ids[collection] = created.json()["id"]
    order = await place_order(
        service.services.database,
        callers.a.tenant_id,
        ids["accounts"],
        ids["products"],
        quantity=1,
        total_minor=1200,
    )
    ids["orders"] = str(order["id"])
    return World(service, callers, ids)


Drive = Callable[[World, Op], Awaitable[httpx.Response | None]]


async def invalid_parameter(w: World, op: Op) -> httpx.Response:
    if op.kind == "list":
        return await w.send(op, query={"limit": 0})
    if op.kind == "create":
        return await w.send(op, body={"unknown": True})
    return await w.send(op, item="not-a-uuid")


async def no_api_key(w: World, op: Op) -> httpx.Response:
    return await w.send(op, auth=False)


async def no_such_resource(w: World, op: Op) -> httpx.Response | None:
    return await w.send(op, item=uuid.uuid4()) if "{" in op.template else None


async def forged_cursor(w: World, op: Op) -> httpx.Response | None:
    return await w.send(op, query={"cursor": "not.issued"}) if op.kind == "list" else None


async def taken_unique_value(w: World, op: Op) -> httpx.Response | None:
    # The product of the world already has this sku.
    return await w.send(op) if op.kind == "create" else None


async def stale_version(w: World, op: Op) -> httpx.Response | None:
    return await w.send(op, if_match='"99"') if op.kind in ("change", "delete") else None


async def no_if_match(w: World, op: Op) -> httpx.Response | None:
    return await w.send(op, if_match=None) if op.kind == "change" else None


async def no_idempotency_key(w: World, op: Op) -> httpx.Response | None:
    return await w.send(op, key=None) if op.idempotent else None


async def key_in_flight(w: World, op: Op) -> httpx.Response | None:
    if not op.idempotent:
        return None
    key = uuid.uuid4().hex
    url = op.url(w.ids.get(op.collection))
    body = canonical_body(json.dumps(w.body(op)).encode(), "application/json")
    # Another request with this key holds its lock, as if it were still running.
    outcome = await w.service.services.idempotency.begin(
        w.callers.a.tenant_id, key, fingerprint(op.method, url, body)
    )
    assert type(outcome).__name__ == "New"
    return await w.send(op, key=key)


async def key_reused(w: World, op: Op) -> httpx.Response | None:
    if not op.idempotent:
        return None
    key = uuid.uuid4().hex
    first = await w.send(op, key=key)
    assert first.status_code < 500, first.text
    other = {**(w.body(op) or {}), "name": "Another"}
    return await w.send(op, key=key, body=other)


async def body_not_json(w: World, op: Op) -> httpx.Response | None:
    # Form data, as a browser form would send it: a body, but not JSON.
    if op.kind not in ("create", "change"):
        return None
    return await w.send(op, content=b"name=Cup")


async def duplicate_member(w: World, op: Op) -> httpx.Response | None:
    if op.kind not in ("create", "change"):
        return None
    body = json.dumps(w.body(op))
    return await w.send(op, content=f'{body[:-1]}, "name": "Again"}}'.encode(), json_type=True)


async def oversize_body(w: World, op: Op) -> httpx.Response:
    return await w.send(op, content=b" " * (MAX_BODY + 1))


DRIVES: list[tuple[Drive, set[str]]] = [
    (invalid_parameter, {"validation-error"}),
    (no_api_key, {"unauthorized"}),
    (no_such_resource, {"not-found"}),
    (forged_cursor, {"invalid-cursor"}),
    # A taken sku where the collection has one; elsewhere the create simply succeeds.
    (taken_unique_value, {"conflict"}),
    (stale_version, {"precondition-failed"}),
    (no_if_match, {"precondition-required"}),
    (no_idempotency_key, {"idempotency-key-required"}),
    (key_in_flight, {"idempotency-in-flight"}),
    (key_reused, {"idempotency-key-reused"}),
    (oversize_body, {"payload-too-large"}),
    (body_not_json, {"unsupported-media-type"}),
    (duplicate_member, {"validation-error"}),
]


def _check(op: Op, response: httpx.Response, slugs: set[str], seen: set[int]) -> None:
    if response.status_code < 400:
        return
    body = response.json()
    slug = body["type"].removeprefix(PROBLEMS)
    assert slug in slugs, (str(op), response.status_code, slug)
    assert op.documented(response.status_code, slug), (str(op), response.status_code, slug)
    seen.add(response.status_code)


async def test_every_error_path_answers_what_its_operation_documents(
    open_service: OpenService, callers: Callers, database_urls: DatabaseUrls
) -> None:
    seen: dict[str, set[int]] = {str(op): set() for op in OPERATIONS}

    # Most paths, on one service.
    main = await _world(await open_service(max_body_bytes=MAX_BODY), callers)
    for op in OPERATIONS:
        for drive, slugs in DRIVES:
            response = await drive(main, op)
            if response is not None:
                _check(op, response, slugs, seen[str(op)])

    # The rate limit: one request admitted, then every operation refused.
    tight = Policy(
        rate_limit=RateLimitPolicy(default=Quota(requests=1, period_seconds=3600, burst=1))
    )
    limited = World(await open_service(policy=tight), callers, main.ids)
    await limited.send(OPERATIONS[0])
    for op in OPERATIONS:
        _check(op, await limited.send(op), {"rate-limited"}, seen[str(op)])

    # A dependency that is down: no Redis, and a policy that refuses rather than guess.
    closed = Policy(rate_limit=RateLimitPolicy(on_redis_unavailable="FailClosed"))
    down = World(
        await open_service(policy=closed, redis_url="redis://127.0.0.1:1/0"), callers, main.ids
    )
    for op in OPERATIONS:
        _check(op, await down.send(op), {"service-unavailable"}, seen[str(op)])

    # A bug: the tables lose a column under the running service.
    async with await psycopg.AsyncConnection.connect(
        database_urls.admin_url, autocommit=True
    ) as admin:
        for table in ("products", "accounts", "orders"):
            await admin.execute(
                sql.SQL("ALTER TABLE {} RENAME COLUMN version TO version_lost").format(
                    sql.Identifier(table)
                )
            )
    for op in OPERATIONS:
        _check(op, await main.send(op), {"internal-error"}, seen[str(op)])

    # And every documented error status was actually produced for every operation.
    for op in OPERATIONS:
        documented = {int(status) for status in op.responses if int(status) >= 400}
        assert seen[str(op)] == documented, str(op)
