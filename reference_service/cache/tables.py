"""A resource table's reads of one row behind `ReadThrough`, keyed by tenant and id.

Declared per resource (`ResourceSpec.cached`); the endpoint factory reads through it, calls
`remember` before a create commits and `invalidate` after a change or a delete committed.
Redis is an optimisation here, never a dependency: when it fails, the row is read from
Postgres and the failure logged (an invalidation that failed leaves an entry that expires
within its TTL).

Each tenant's Bloom filter is built on the first read that finds it missing, in the background
(under a `SET NX PX` lease, so one process builds it while every reader goes on reading
through); until it is built the filter refuses nothing. Its "built" mark expires after
`cache_bloom_rebuild_seconds`, so an id the filter does not hold (written behind the API's
back, or whose `remember` failed) is refused at most that long.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from typing import Any, Generic
from uuid import UUID

from redis.asyncio import Redis
from redis.exceptions import RedisError

from reference_service.cache.bloom import BloomShape
from reference_service.cache.readthrough import CachePolicy, ReadThrough
from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.db.repository import NotFound
from reference_service.domain.common import M, Table

log = logging.getLogger(__name__)

_PAGE = 500


class TableCache(Generic[M]):
    def __init__(
        self,
        redis: Redis,
        database: Database,
        settings: Settings,
        table: Table[M],
        item: str,
        *,
        build_filters: bool = True,
    ) -> None:
        """`build_filters=False`: filters are built only by `build_filter`, never on a read."""
        self._database = database
        self._build_filters = build_filters
        self._table = table
        self._redis = redis
        self._rebuild_seconds = settings.cache_bloom_rebuild_seconds
        self._building: set[asyncio.Task[None]] = set()
        self.cache = ReadThrough(
            redis,
            prefix=settings.redis_key_prefix,
            namespace=item,
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

    async def get(self, tenant_id: UUID, row_id: UUID, first: Sequence[Any] | None = None) -> M:
        """The live row as the tenant sees it, or `repository.NotFound`."""
        row = await self.find(tenant_id, row_id, first)
        if row is None:
            raise NotFound(self._table.name, row_id)
        return row

    def read_call(self, tenant_id: UUID, row_id: UUID) -> tuple[list[str], list[int]]:
        """Keys and arguments of `readthrough.READ_SCRIPT` for the row (see `find`'s `first`)."""
        return self.cache.read_call(tenant_id, str(row_id))

    def remember_call(self, tenant_id: UUID, row_id: UUID) -> tuple[str, list[int]]:
        """The filter key and bit positions that `remember` sets, for a caller that sets them
        in a round trip of its own (before the row's insert commits, as `remember`)."""
        return self.cache.keys(tenant_id, "").bloom, self.cache.shape.positions(str(row_id))

    async def find(
        self, tenant_id: UUID, row_id: UUID, first: Sequence[Any] | None = None
    ) -> M | None:
        """The live row as the tenant sees it, or None. `first`: the reply of the read script
        to `read_call`, when the caller sent it already."""

        async def load() -> dict[str, Any] | None:
            try:
                row = await self._table.get(self._database, tenant_id, row_id)
            except NotFound:
                return None
            return row.model_dump(mode="json")

        try:
            value = await self.cache.get(
                tenant_id,
                str(row_id),
                load,
                on_unbuilt=(lambda: self._build_soon(tenant_id)) if self._build_filters else None,
                first=first,
            )
        except RedisError as exc:
            log.warning(
                "cache unavailable, reading %s from the database: %s", self._table.name, exc
            )
            value = await load()
        return None if value is None else self._table.model.model_validate(value)

    async def invalidate(self, tenant_id: UUID, row_id: UUID) -> None:
        try:
            await self.cache.invalidate(tenant_id, str(row_id))
        except RedisError as exc:
            log.warning("could not invalidate %s %s: %s", self._table.name, row_id, exc)

    async def remember(self, tenant_id: UUID, row_id: UUID) -> None:
        try:
            await self.cache.remember(tenant_id, str(row_id))
        except RedisError as exc:
            log.warning("could not add %s %s to the filter: %s", self._table.name, row_id, exc)

    async def build_filter(self, tenant_id: UUID) -> int:
        """Fill the tenant's filter with every live id and mark it built; returns how many."""
        return await self.cache.build_filter(
            tenant_id, self._ids(tenant_id), ttl_seconds=self._rebuild_seconds
        )

    async def close(self) -> None:
        """Stop the builds still running (their lease lets the next process build)."""
        for task in list(self._building):
            task.cancel()
        await asyncio.gather(*self._building, return_exceptions=True)

    def _build_soon(self, tenant_id: UUID) -> None:
        task = asyncio.create_task(self._build_once(tenant_id))
        self._building.add(task)
        task.add_done_callback(self._building.discard)

    async def _build_once(self, tenant_id: UUID) -> None:
        lease = self.cache.keys(tenant_id, "").built + ":building"
        # One builder per tenant at a time; one that dies frees the key with its lease.
        lease_ms = max(1000, round(self._rebuild_seconds * 1000))
        try:
            if not await self._redis.set(lease, secrets.token_hex(16), nx=True, px=lease_ms):
                return
            count = await self.build_filter(tenant_id)
            log.info("built the %s filter of tenant %s: %d ids", self._table.name, tenant_id, count)
        except Exception:
            # A failed build leaves the filter unbuilt: it refuses nothing, and the next read
            # after the lease tries again.
            log.exception("building the %s filter of tenant %s failed", self._table.name, tenant_id)

    async def _ids(self, tenant_id: UUID) -> AsyncIterator[str]:
        after = None
        while True:
            page = await self._table.page(self._database, tenant_id, after=after, limit=_PAGE)
            for row in page:
                yield str(row.id)
            if len(page) < _PAGE:
                return
            after = (page[-1].created_at, page[-1].id)
