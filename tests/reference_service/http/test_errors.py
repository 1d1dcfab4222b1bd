"""Every error is RFC 9457 problem+json with a registered type, and bad input is never a 500."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from reference_service.http.problems import (
    REGISTRY,
    TYPE_BASE,
    VALIDATION_ERROR,
    Problem,
    json_pointer,
    retry_after,
    validation_errors,
)
from tests.reference_service.http.conftest import Callers, Service, assert_problem

PRODUCT = {"sku": "MUG-1", "name": "Mug", "price_minor": 1200, "currency": "EUR"}


def test_registry_types_are_absolute_and_documented() -> None:
    for slug, kind in REGISTRY.items():
        assert kind.uri == TYPE_BASE + slug
        assert kind.uri.startswith("https://")
        assert 400 <= kind.status <= 599
        assert kind.title and kind.description


def test_problem_cannot_shadow_standard_members() -> None:
    with pytest.raises(ValueError, match="status"):
        Problem(VALIDATION_ERROR, "x", status=500)


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert [retry_after(s) for s in (0.2, 1.0, 1.01, 0)] == ["1", "1", "2", "1"]


def test_json_pointer_escapes_tokens() -> None:
    assert json_pointer(["items", 0, "a/b~c"]) == "/items/0/a~1b~0c"
    assert json_pointer([]) == ""


def test_validation_errors_never_echo_the_input() -> None:
    errors = [{"loc": ("body", "name"), "msg": "too long", "input": "secret" * 100}]
    assert validation_errors(errors) == [{"in": "body", "pointer": "/name", "detail": "too long"}]


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/nope"), 404, "not-found")
    assert_problem(await client.get("/api/v1/widgets"), 404, "not-found")


async def test_wrong_method_is_a_405_problem_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.put("/api/v1/products")
    assert_problem(response, 405, "method-not-allowed")
    assert set(response.headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "POST"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer adbm_00000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},  # unknown
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + "x" * 10_000},
    ],
)
async def test_missing_or_unknown_key_is_a_401_problem(
    client: httpx.AsyncClient, callers: Callers, headers: dict[str, str]
) -> None:
    response = await client.get("/api/v1/products", headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_unexpected_errors_are_a_generic_500(service: Service) -> None:
    async def boom() -> None:
        raise RuntimeError("password=hunter2 in SELECT * FROM secrets")

    service.app.add_api_route("/boom", boom)
    response = await service.client.get("/boom")
    body = assert_problem(response, 500, "internal-error")
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert body["detail"] == "An unexpected error occurred."


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({**PRODUCT, "colour": "blue"}, "/colour"),
        ({**PRODUCT, "price_minor": "12"}, "/price_minor"),
        ({**PRODUCT, "price_minor": 12.5}, "/price_minor"),
        ({**PRODUCT, "price_minor": 2**63}, "/price_minor"),
        ({**PRODUCT, "price_minor": -1}, "/price_minor"),
        ({**PRODUCT, "currency": "euro"}, "/currency"),
        ({**PRODUCT, "sku": "no spaces"}, "/sku"),
        ({**PRODUCT, "name": ""}, "/name"),
        ({**PRODUCT, "name": "nul\u0000"}, "/name"),
        ({k: v for k, v in PRODUCT.items() if k != "name"}, "/name"),
        ([PRODUCT], ""),
    ],
)
async def test_bad_bodies_are_400_problems_with_errors(
    client: httpx.AsyncClient, callers: Callers, body: Any, pointer: str
) -> None:
    response = await client.post("/api/v1/products", json=body, headers=callers.a.headers)
    problem = assert_problem(response, 400, "validation-error")
    assert {"in": "body", "pointer": pointer} in [
        {"in": e["in"], "pointer": e["pointer"]} for e in problem["errors"]
    ]
    assert all(error["detail"] for error in problem["errors"])


async def test_malformed_json_is_a_400_problem(client: httpx.AsyncClient, callers: Callers) -> None:
    response = await client.post(
        "/api/v1/products",
        content=b'{"sku": ',
        headers={**callers.a.headers, "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 400, "validation-error")
    assert problem["errors"][0]["pointer"] == ""


@pytest.mark.parametrize(
    ("url", "where", "pointer"),
    [
        ("/api/v1/products/not-a-uuid", "path", "/product_id"),
        ("/api/v1/products?limit=0", "query", "/limit"),
        ("/api/v1/products?limit=101", "query", "/limit"),
        ("/api/v1/accounts?limit=ten", "query", "/limit"),
    ],
)
async def test_bad_parameters_are_400_problems(
    client: httpx.AsyncClient, callers: Callers, url: str, where: str, pointer: str
) -> None:
    problem = assert_problem(
        await client.get(url, headers=callers.a.headers), 400, "validation-error"
    )
    assert problem["errors"][0]["in"] == where
    assert problem["errors"][0]["pointer"] == pointer


async def test_patch_bodies_refuse_null_empty_and_fixed_fields(
    client: httpx.AsyncClient, callers: Callers
) -> None:
    created = await client.post("/api/v1/products", json=PRODUCT, headers=callers.a.headers)
    url = f"/api/v1/products/{created.json()['id']}"
    headers = {**callers.a.headers, "If-Match": created.headers["etag"]}
    for body in ({}, {"name": None}, {"sku": "OTHER"}, {"price_minor": "1"}):
        response = await client.patch(url, json=body, headers=headers)
        assert_problem(response, 400, "validation-error")


async def test_duplicate_sku_is_a_409_problem(client: httpx.AsyncClient, callers: Callers) -> None:
    first = await client.post("/api/v1/products", json=PRODUCT, headers=callers.a.headers)
    assert first.status_code == 201
    again = await client.post("/api/v1/products", json=PRODUCT, headers=callers.a.headers)
    body = assert_problem(again, 409, "conflict")
    assert "MUG-1" not in body["detail"]
    # Another tenant has its own catalogue: the same sku is fine there.
    other = await client.post("/api/v1/products", json=PRODUCT, headers=callers.b.headers)
    assert other.status_code == 201


async def test_openapi_documents_routes_and_problems(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    patch = document["paths"]["/api/v1/products/{product_id}"]["patch"]
    assert {p["name"] for p in patch["parameters"]} >= {"product_id", "if-match"}
    assert "application/problem+json" in patch["responses"]["412"]["content"]
    assert "bearer" in str(document["components"]["securitySchemes"]).lower()
