"""API versions: v2's money objects over the same data as v1, deprecation headers from the
policy, and the committed OpenAPI document."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from reference_service.app import create_app
from reference_service.cli import main, openapi_document
from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.policy import DeprecatedVersion, Policy, VersioningPolicy
from tests.reference_service.http.conftest import Callers, OpenService, assert_problem, place_order

ROOT = Path(__file__).resolve().parents[3]

DEPRECATED_AT = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
# Written with an offset on purpose: Sunset is an HTTP-date, always in GMT.
SUNSET_AT = datetime(2026, 7, 1, 2, 0, 0, tzinfo=timezone(timedelta(hours=2)))
LINK = "https://adbm.io/docs/migrating-to-v2"
V1_DEPRECATED = Policy(
    versioning=VersioningPolicy(
        current="v2",
        deprecated=[
            # Kept served past its sunset: these tests are about the headers of a served
            # deprecated version (the 410 of a retired one is tested below).
            DeprecatedVersion(
                version="v1",
                deprecated_at=DEPRECATED_AT,
                sunset_at=SUNSET_AT,
                link=LINK,
                after_sunset="Serve",
            )
        ],
    )
)


def _retiring(sunset_at: datetime, after_sunset: str = "Gone") -> Policy:
    return Policy(
        versioning=VersioningPolicy(
            current="v2",
            deprecated=[
                DeprecatedVersion.model_validate(
                    {
                        "version": "v1",
                        "deprecated_at": DEPRECATED_AT,
                        "sunset_at": sunset_at,
                        "link": LINK,
                        "after_sunset": after_sunset,
                    }
                )
            ],
        )
    )


EXPECTED_HEADERS = {
    "deprecation": f"@{int(DEPRECATED_AT.timestamp())}",
    "sunset": "Wed, 01 Jul 2026 00:00:00 GMT",
    "link": f'<{LINK}>; rel="deprecation", <{LINK}>; rel="sunset"',
}
DEPRECATION_HEADERS = ("deprecation", "sunset")


async def _post(
    client: httpx.AsyncClient, headers: dict[str, str], path: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(path, json=body, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_v2_money_round_trips_with_v1(
    client: httpx.AsyncClient, callers: Callers, database: Database
) -> None:
    headers = callers.a.headers
    product = await _post(
        client,
        headers,
        "/api/v2/products",
        {"sku": "MUG-1", "name": "Mug", "price": {"amount": 1299, "currency": "EUR"}},
    )
    assert product["price"] == {"amount": 1299, "currency": "EUR"}
    assert "price_minor" not in product and "currency" not in product

    v1 = (await client.get(f"/api/v1/products/{product['id']}", headers=headers)).json()
    assert v1["price_minor"] == 1299 and v1["currency"] == "EUR"
    assert {k: v1[k] for k in ("id", "version", "sku", "name")} == {
        k: product[k] for k in ("id", "version", "sku", "name")
    }

    # A change through v1 shows in v2, and a change through v2 shows in v1.
    changed = await client.patch(
        f"/api/v1/products/{product['id']}",
        json={"price_minor": 1500},
        headers={**headers, "If-Match": '"1"'},
    )
    assert changed.status_code == 200, changed.text
    v2 = await client.get(f"/api/v2/products/{product['id']}", headers=headers)
    assert v2.headers["etag"] == '"2"'
    assert v2.json()["price"] == {"amount": 1500, "currency": "EUR"}
    changed = await client.patch(
        f"/api/v2/products/{product['id']}",
        json={"price": {"amount": 900, "currency": "USD"}},
        headers={**headers, "If-Match": '"2"'},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["price"] == {"amount": 900, "currency": "USD"}
    assert changed.json()["name"] == "Mug"
    v1 = (await client.get(f"/api/v1/products/{product['id']}", headers=headers)).json()
    assert (v1["price_minor"], v1["currency"], v1["version"]) == (900, "USD", 3)

    account = await _post(
        client,
        headers,
        "/api/v2/accounts",
        {"name": "Alice", "balance": {"amount": 5000, "currency": "EUR"}},
    )
    assert account["balance"] == {"amount": 5000, "currency": "EUR"}
    created = await client.get(f"/api/v2/accounts/{account['id']}", headers=headers)
    assert created.json() == account
    v1 = (await client.get(f"/api/v1/accounts/{account['id']}", headers=headers)).json()
    assert (v1["balance_minor"], v1["currency"]) == (5000, "EUR")
    listed = (await client.get("/api/v2/accounts", headers=headers)).json()
    assert listed["items"] == [account]

    order = await place_order(
        database, callers.a.tenant_id, account["id"], product["id"], quantity=2, total_minor=2400
    )
    v2_order = (await client.get(f"/api/v2/orders/{order['id']}", headers=headers)).json()
    assert v2_order["total"] == {"amount": 2400, "currency": "EUR"}
    assert v2_order["quantity"] == 2 and v2_order["account_id"] == account["id"]
    v2_orders = (await client.get("/api/v2/orders", headers=headers)).json()
    assert v2_orders["items"] == [v2_order]


@pytest.mark.parametrize(
    "body",
    [
        {"sku": "A", "name": "A", "price_minor": 1, "currency": "EUR"},
        {"sku": "A", "name": "A", "price": {"amount": 1.5, "currency": "EUR"}},
        {"sku": "A", "name": "A", "price": {"amount": "1", "currency": "EUR"}},
        {"sku": "A", "name": "A", "price": {"amount": 1, "currency": "eur"}},
        {"sku": "A", "name": "A", "price": {"amount": -1, "currency": "EUR"}},
        {"sku": "A", "name": "A", "price": {"amount": 1, "currency": "EUR", "x": 1}},
    ],
)
async def test_v2_money_is_strict(
    client: httpx.AsyncClient, callers: Callers, body: dict[str, Any]
) -> None:
    response = await client.post("/api/v2/products", json=body, headers=callers.a.headers)
    assert_problem(response, 400, "validation-error")


async def test_v2_patch_rejects_null_and_empty(client: httpx.AsyncClient, callers: Callers) -> None:
    headers = callers.a.headers
    product = await _post(
        client,
        headers,
        "/api/v2/products",
        {"sku": "MUG-1", "name": "Mug", "price": {"amount": 1, "currency": "EUR"}},
    )
    url = f"/api/v2/products/{product['id']}"
    for body in ({}, {"price": None}):
        response = await client.patch(url, json=body, headers={**headers, "If-Match": '"1"'})
        assert_problem(response, 400, "validation-error")
    # Only the name: the price is kept.
    renamed = await client.patch(url, json={"name": "Cup"}, headers={**headers, "If-Match": '"1"'})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["price"] == {"amount": 1, "currency": "EUR"}


async def test_deprecated_version_responses_carry_the_headers(
    open_service: OpenService, callers: Callers
) -> None:
    client = (await open_service(policy=V1_DEPRECATED)).client
    headers = callers.a.headers
    responses = {
        "created": await client.post(
            "/api/v1/products",
            json={"sku": "MUG-1", "name": "Mug", "price_minor": 1, "currency": "EUR"},
            headers=headers,
        ),
        "listed": await client.get("/api/v1/products?limit=1", headers=headers),
        "unauthorized": await client.get("/api/v1/products"),
        "invalid": await client.post("/api/v1/products", json={}, headers=headers),
        "missing": await client.get(f"/api/v1/products/{uuid.uuid4()}", headers=headers),
        "no route": await client.get("/api/v1/nothing-here", headers=headers),
    }
    assert [r.status_code for r in responses.values()] == [201, 200, 401, 400, 404, 404]
    for name, response in responses.items():
        got = {k: response.headers.get(k) for k in EXPECTED_HEADERS}
        assert got == EXPECTED_HEADERS, name
        # Exactly one field of each, so clients reading a single value see the right one.
        for header in DEPRECATION_HEADERS:
            assert len(response.headers.get_list(header)) == 1, (name, header)

    # The current version, and paths outside the API, carry none of them.
    for path in ("/api/v2/products", "/api/v2/nothing-here", "/health", "/api/v10"):
        response = await client.get(path, headers=headers)
        assert not {"deprecation", "sunset", "link"} & set(response.headers), path


async def test_deprecated_version_500s_carry_the_headers(open_service: OpenService) -> None:
    service = await open_service(policy=V1_DEPRECATED)

    async def boom() -> None:
        raise RuntimeError("password=hunter2")

    service.app.add_api_route("/api/v1/boom", boom)
    response = await service.client.get("/api/v1/boom")
    body = assert_problem(response, 500, "internal-error")
    assert "hunter2" not in response.text
    assert body["detail"] == "An unexpected error occurred."
    assert {k: response.headers.get(k) for k in EXPECTED_HEADERS} == EXPECTED_HEADERS


async def test_deprecation_headers_keep_a_lists_next_link(
    open_service: OpenService, callers: Callers
) -> None:
    client = (await open_service(policy=V1_DEPRECATED)).client
    for sku in ("A", "B"):
        await _post(
            client,
            callers.a.headers,
            "/api/v1/products",
            {"sku": sku, "name": sku, "price_minor": 1, "currency": "EUR"},
        )
    listed = await client.get("/api/v1/products?limit=1", headers=callers.a.headers)
    links = listed.headers.get_list("link")
    assert links[0] == f'<{listed.json()["next"]}>; rel="next"'
    assert links[1:] == [EXPECTED_HEADERS["link"]]


async def test_no_link_header_without_a_link(open_service: OpenService) -> None:
    policy = Policy(
        versioning=VersioningPolicy(
            deprecated=[
                DeprecatedVersion(
                    version="v1",
                    deprecated_at=DEPRECATED_AT,
                    sunset_at=SUNSET_AT,
                    after_sunset="Serve",  # a served version's headers, past its sunset
                )
            ]
        )
    )
    response = await (await open_service(policy=policy)).client.get("/api/v1/products")
    assert response.status_code == 401
    assert response.headers["deprecation"] == EXPECTED_HEADERS["deprecation"]
    assert response.headers["sunset"] == EXPECTED_HEADERS["sunset"]
    assert "link" not in response.headers


async def test_no_version_is_deprecated_by_default(
    client: httpx.AsyncClient, callers: Callers
) -> None:
    for path in ("/api/v1/products", "/api/v2/products"):
        response = await client.get(path, headers=callers.a.headers)
        assert response.status_code == 200
        assert not {"deprecation", "sunset", "link"} & set(response.headers), path


def _deprecated_flags(settings: Settings) -> dict[str, set[bool]]:
    """For each version prefix, the set of `deprecated` values of its operations."""
    flags: dict[str, set[bool]] = {"/api/v1": set(), "/api/v2": set()}
    for path, operations in create_app(settings).openapi()["paths"].items():
        for prefix, seen in flags.items():
            if path.startswith(prefix + "/"):
                seen.update(op.get("deprecated", False) for op in operations.values())
    return flags


def test_openapi_marks_only_deprecated_versions() -> None:
    assert _deprecated_flags(Settings()) == {"/api/v1": {False}, "/api/v2": {False}}
    assert _deprecated_flags(Settings(policy=V1_DEPRECATED)) == {
        "/api/v1": {True},
        "/api/v2": {False},
    }
    # The current version is never deprecated, even when the policy lists it.
    listed_current = Policy(
        versioning=VersioningPolicy(
            current="v1",
            deprecated=[
                DeprecatedVersion(version="v1", deprecated_at=DEPRECATED_AT, sunset_at=SUNSET_AT)
            ],
        )
    )
    assert _deprecated_flags(Settings(policy=listed_current))["/api/v1"] == {False}


def test_committed_openapi_document_is_current() -> None:
    committed = (ROOT / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_document(Settings()), (
        "openapi.json is out of date: run `adbm-service openapi -o openapi.json`"
    )


def test_openapi_command_writes_the_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "openapi.json"
    assert main(["openapi", "-o", str(target)]) == 0
    assert main(["openapi"]) == 0
    printed = capsys.readouterr().out
    assert printed == target.read_text(encoding="utf-8") == openapi_document(Settings())
    assert printed.endswith("}\n")


async def test_a_version_past_its_sunset_is_gone(
    open_service: OpenService, callers: Callers
) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    service = await open_service(policy=_retiring(past))
    for method, path in (
        ("GET", "/api/v1/products"),
        ("POST", "/api/v1/products"),
        ("GET", f"/api/v1/accounts/{uuid.uuid4()}"),
    ):
        # Before authentication: the version is gone for everyone.
        for headers in ({}, callers.a.headers):
            response = await service.client.request(method, path, headers=headers)
            body = assert_problem(response, 410, "gone")
            assert "v1" in body["detail"]
            links = response.headers.get_list("link")
            assert '</api/v2>; rel="successor-version"' in links
            assert f'<{LINK}>; rel="deprecation", <{LINK}>; rel="sunset"' in links
            assert response.headers["deprecation"] == f"@{int(DEPRECATED_AT.timestamp())}"
    # The current version is served as ever.
    served = await service.client.get("/api/v2/products", headers=callers.a.headers)
    assert served.status_code == 200
    assert "deprecation" not in served.headers


async def test_before_its_sunset_a_retiring_version_is_served(
    open_service: OpenService, callers: Callers
) -> None:
    future = datetime.now(UTC) + timedelta(days=30)
    service = await open_service(policy=_retiring(future))
    response = await service.client.get("/api/v1/products", headers=callers.a.headers)
    assert response.status_code == 200
    assert "deprecation" in response.headers


async def test_the_policy_can_keep_serving_past_the_sunset(
    open_service: OpenService, callers: Callers
) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    service = await open_service(policy=_retiring(past, after_sunset="Serve"))
    response = await service.client.get("/api/v1/products", headers=callers.a.headers)
    assert response.status_code == 200
    assert "sunset" in response.headers


def _documents_410(settings: Settings) -> dict[str, set[bool]]:
    found: dict[str, set[bool]] = {"/api/v1": set(), "/api/v2": set()}
    for path, operations in create_app(settings).openapi()["paths"].items():
        for prefix, seen in found.items():
            if path.startswith(prefix + "/"):
                seen.update("410" in op["responses"] for op in operations.values())
    return found


def test_openapi_lists_410_only_where_a_version_can_be_gone() -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    assert _documents_410(Settings()) == {"/api/v1": {False}, "/api/v2": {False}}
    assert _documents_410(Settings(policy=_retiring(past))) == {
        "/api/v1": {True},
        "/api/v2": {False},
    }
    assert _documents_410(Settings(policy=_retiring(past, after_sunset="Serve"))) == {
        "/api/v1": {False},
        "/api/v2": {False},
    }
