"""Every resource the API serves, in the order of the OpenAPI document. A new resource is a
domain module with its `RESOURCE` declaration, listed here."""

from __future__ import annotations

from typing import Any, Final

from reference_service.domain import accounts, orders, products
from reference_service.domain.common import ResourceSpec

RESOURCES: Final[tuple[ResourceSpec[Any], ...]] = (
    products.RESOURCE,
    accounts.RESOURCE,
    orders.RESOURCE,
)
