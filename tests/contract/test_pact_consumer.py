"""Consumer side of the Pact between `adbm_client` and the service: each test drives the real
client against Pact's mock server, which records what the client sends and relies on.

The pact is written to a scratch directory and compared with the committed
`pacts/adbm-python-client-adbm-reference-service.json`, which the provider verification replays
(`test_pact_provider.py`): a client change that changes the contract fails here until the
committed file is regenerated (`ADBM_UPDATE_PACTS=1`) and, with it, verified against the
provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pact import Pact, generate, match

from adbm_client import AdbmClient, Money, NotFound, PreconditionFailed, Product, Unauthorized
from tests.contract.pact_files import pact_file, reproduced

CONSUMER = "adbm-python-client"
PROVIDER = "adbm-reference-service"
PACT_FILE = pact_file(CONSUMER, PROVIDER)
PROBLEM = "application/problem+json"

EXAMPLE_KEY = "adbm_example0000000000000000000000000000"
PRODUCT_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
TIMESTAMP = "2026-12-01T08:00:00.000000Z"


def _auth() -> Any:
    return match.type(
        f"Bearer {EXAMPLE_KEY}", generator=generate.provider_state("Bearer ${api_key}")
    )


def _product_path() -> Any:
    return match.type(
        f"/api/v2/products/{PRODUCT_ID}",
        generator=generate.provider_state("/api/v2/products/${product_id}"),
    )


def _product_body(**fixed: Any) -> Any:
    return match.like(
        {
            "id": match.regex(PRODUCT_ID, regex=UUID_RE),
            "version": match.int(1),
            "created_at": match.str(TIMESTAMP),
            "updated_at": match.str(TIMESTAMP),
            "sku": match.str("MUG-1"),
            "name": match.str("Mug"),
            "price": {"amount": match.int(1200), "currency": match.str("EUR")},
            **fixed,
        }
    )


def _problem(slug: str, status: int) -> Any:
    return {
        "type": f"https://adbm.io/problems/{slug}",
        "status": status,
        "title": match.str("Title"),
        "detail": match.str("Detail"),
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where each test's interactions are merged into one pact; compared with the committed
    one once every test of the module has run."""
    with reproduced(tmp_path_factory.mktemp("pacts"), PACT_FILE) as out:
        yield out


@pytest.fixture
def pact(written: Path) -> Iterator[Pact]:
    """A pact per test (the core freezes a pact's interactions once its mock server ran); the
    core merges each into the module's file."""
    pact = Pact(CONSUMER, PROVIDER).with_specification("V4")
    yield pact
    pact.write_file(written)


def _client(url: object) -> AdbmClient:
    return AdbmClient(str(url), EXAMPLE_KEY)


def _product(version: int) -> Product:
    stamp = datetime(2026, 12, 1, 8, tzinfo=UTC)
    return Product(
        id=UUID(PRODUCT_ID),
        version=version,
        created_at=stamp,
        updated_at=stamp,
        sku="MUG-1",
        name="Mug",
        price=Money(amount=1200, currency="EUR"),
    )


def test_create_a_product(pact: Pact) -> None:
    (
        pact.upon_receiving("a request to create a product")
        .given("a tenant with an API key")
        .with_request("POST", "/api/v2/products")
        .with_header("Authorization", _auth())
        .with_header("Idempotency-Key", match.regex("5b0c1d2e-key", regex=r"[\x21-\x7e]{1,255}"))
        .with_body(
            {"sku": "MUG-1", "name": "Mug", "price": {"amount": 1200, "currency": "EUR"}},
            "application/json",
        )
        .will_respond_with(201)
        .with_header("ETag", match.regex('"1"', regex=r'"\d+"'))
        .with_header(
            "Location",
            match.regex(f"/api/v2/products/{PRODUCT_ID}", regex=f"/api/v2/products/{UUID_RE}"),
        )
        .with_body(_product_body(), "application/json")
    )
    with pact.serve() as server, _client(server.url) as client:
        created = client.create_product("MUG-1", "Mug", Money(amount=1200, currency="EUR"))
    assert created.sku == "MUG-1" and created.version == 1


def test_read_a_product(pact: Pact) -> None:
    (
        pact.upon_receiving("a request for a product")
        .given("a tenant with products", count=1)
        .with_request("GET", _product_path())
        .with_header("Authorization", _auth())
        .will_respond_with(200)
        .with_header("ETag", match.regex('"1"', regex=r'"\d+"'))
        .with_body(_product_body(), "application/json")
    )
    with pact.serve() as server, _client(server.url) as client:
        product = client.get_product(UUID(PRODUCT_ID))
    assert product.etag == '"1"'


def test_a_change_from_a_stale_read_is_refused(pact: Pact) -> None:
    (
        pact.upon_receiving("a change to a product based on an outdated version")
        .given("a tenant with a product changed since version 1")
        .with_request("PATCH", _product_path())
        .with_header("Authorization", _auth())
        .with_header("If-Match", '"1"')
        .with_header("Idempotency-Key", match.regex("5b0c1d2e-key", regex=r"[\x21-\x7e]{1,255}"))
        .with_body({"name": "Big mug"}, "application/json")
        .will_respond_with(412)
        .with_body(_problem("precondition-failed", 412), PROBLEM)
    )
    with pact.serve() as server, _client(server.url) as client, pytest.raises(PreconditionFailed):
        client.update_product(_product(version=1), name="Big mug")


def test_delete_a_product(pact: Pact) -> None:
    (
        pact.upon_receiving("a request to delete a product")
        .given("a tenant with products", count=1)
        .with_request("DELETE", _product_path())
        .with_header("Authorization", _auth())
        .with_header("If-Match", '"1"')
        .will_respond_with(204)
    )
    with pact.serve() as server, _client(server.url) as client:
        client.delete_product(_product(version=1))


def test_a_missing_product(pact: Pact) -> None:
    missing = "0190a1b2-0000-7000-8000-000000000000"
    (
        pact.upon_receiving("a request for a product that does not exist")
        .given("a tenant with an API key")
        .with_request("GET", f"/api/v2/products/{missing}")
        .with_header("Authorization", _auth())
        .will_respond_with(404)
        .with_body(_problem("not-found", 404), PROBLEM)
    )
    with pact.serve() as server, _client(server.url) as client, pytest.raises(NotFound):
        client.get_product(UUID(missing))


def test_an_unknown_key_is_refused(pact: Pact) -> None:
    (
        pact.upon_receiving("a request with an unknown API key")
        .with_request("GET", "/api/v2/products")
        .with_header("Authorization", f"Bearer {EXAMPLE_KEY}")
        .will_respond_with(401)
        .with_body(_problem("unauthorized", 401), PROBLEM)
    )
    with pact.serve() as server, _client(server.url) as client, pytest.raises(Unauthorized):
        client.products_page()


def test_pages_are_followed_by_their_next_link(pact: Pact) -> None:
    next_link = "/api/v2/products?limit=2&cursor=eyJjIjoicHJvZHVjdHMifQ.c2ln"
    (
        pact.upon_receiving("a request for the first page of products")
        .given("a tenant with products", count=3)
        .with_request("GET", "/api/v2/products")
        .with_query_parameter("limit", "2")
        .with_header("Authorization", _auth())
        .will_respond_with(200)
        .with_body(
            {
                "items": match.each_like(_product_body(), min=2),
                "next": match.regex(
                    next_link, regex=r"/api/v2/products\?.*cursor=[A-Za-z0-9_.-]+.*"
                ),
            },
            "application/json",
        )
    )
    with pact.serve() as server, _client(server.url) as client:
        page = client.products_page(limit=2)
    assert page.items and page.next == next_link
