"""A typed Python client of the ADBM reference service's v2 API, as a consuming team writes one.

    with AdbmClient("https://shop.example", api_key) as client:
        product = client.create_product("MUG-1", "Mug", Money(amount=1200, currency="EUR"))
        for page_item in client.products():
            ...

It depends on the published HTTP contract only (httpx and pydantic), never on the service's
code. The Pact consumer tests in `tests/contract/` record what it relies on.
"""

from adbm_client.client import AdbmClient, RetryPolicy
from adbm_client.models import Account, Money, Order, Page, Product
from adbm_client.problems import (
    Conflict,
    IdempotencyInFlight,
    IdempotencyKeyReused,
    InvalidCursor,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
    Problem,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)

__all__ = [
    "Account",
    "AdbmClient",
    "Conflict",
    "IdempotencyInFlight",
    "IdempotencyKeyReused",
    "InvalidCursor",
    "Money",
    "NotFound",
    "Order",
    "Page",
    "PreconditionFailed",
    "PreconditionRequired",
    "Problem",
    "Product",
    "RateLimited",
    "RetryPolicy",
    "ServiceUnavailable",
    "Unauthorized",
    "ValidationFailed",
]
