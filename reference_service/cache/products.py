"""The product read cache: `products.get` behind `ReadThrough`, keyed by tenant and id."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from reference_service.cache.bloom import BloomShape
from reference_service.cache.readthrough import CachePolicy, ReadThrough
from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.db.repository import NotFound
from reference_service.domain import products

_PAGE = 500


class ProductCache:
    def __init__(self, redis: Redis, database: Database, settings: Settings) -> None:
        self._database = database
        self.cache = ReadThrough(
            redis,
            prefix=settings.redis_key_prefix,
            namespace="product",
            policy=CachePolicy(
                ttl_seconds=settings.cache_ttl_seconds,
                null_ttl_seconds=settings.cache_null_ttl_seconds,
                jitter=settings.cache_ttl_jitter,
                lease_ms=settings.cache_lock_lease_ms,
            ),
            shape=BloomShape.for_capacity(
                settings.cache_bloom_capacity, settings.cache_bloom_error_rate
            ),
        )

    async def get(self, tenant_id: UUID, product_id: UUID) -> products.Product | None:
        async def load() -> dict[str, Any] | None:
            try:
                product = await products.get(self._database, tenant_id, product_id)
            except NotFound:
                return None
            return product.model_dump(mode="json")

        value = await self.cache.get(tenant_id, str(product_id), load)
        return None if value is None else products.Product.model_validate(value)

    async def invalidate(self, tenant_id: UUID, product_id: UUID) -> None:
        await self.cache.invalidate(tenant_id, str(product_id))

    async def remember(self, tenant_id: UUID, product_id: UUID) -> None:
        await self.cache.remember(tenant_id, str(product_id))

    async def build_filter(self, tenant_id: UUID) -> int:
        return await self.cache.build_filter(tenant_id, self._ids(tenant_id))

    async def _ids(self, tenant_id: UUID) -> AsyncIterator[str]:
        after = None
        while True:
            page = await products.page(self._database, tenant_id, after=after, limit=_PAGE)
            for product in page:
                yield str(product.id)
            if len(page) < _PAGE:
                return
            after = (page[-1].created_at, page[-1].id)
