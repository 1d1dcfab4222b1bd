"""A read-through cache on Redis, per tenant, with the usual defences:

- **penetration**: a Bloom filter of the ids that exist (bloom.py, bloom.lua) refuses unknown
  ids without touching Postgres once it is built; ids it lets through that do not exist are
  cached as "no such row" with a short TTL (null caching);
- **avalanche**: every TTL is drawn with jitter, so entries filled together expire apart;
- **stampede**: on expiry one caller rebuilds under a `SET NX PX` mutex holding an owner token
  (released by compare-and-delete, unlock.lua); the others serve the stale entry, kept past its
  logical expiry for that, or, with no entry at all, wait briefly for the rebuild: the callers
  of one process share one wait (one poller of Redis per process and key), and are all woken
  by its end. A holder that dies blocks nobody past its lease: the mutex expires and the next
  caller rebuilds;
- **early refresh** (XFetch, Vattani et al. 2015): a reader refreshes before expiry with a
  probability that grows as expiry nears and with how long the last rebuild took, so a hot
  key is usually rebuilt by one reader before it ever expires;
- **invalidation**: writes drop the entry and raise its generation, and a rebuild stores what it
  read only if the generation did not move meanwhile (store.lua);
- **tenant isolation**: the tenant is part of every key, and loads run as that tenant (RLS), so
  a cached value is never served to another tenant.

A hit costs one round trip (read.lua returns the filter's verdict, the entry and its
generation together), which a caller may fold into a round trip of its own (`read_call`, and
the reply as `get(first=...)`: the service sends it with the request's rate-limit decision).

Every `get` counts one lookup in `adbm_cache_lookups_total` by its result: `hit` (a fresh entry),
`negative_hit` (a cached "no such row"), `stale` (served while another caller rebuilds),
`filtered` (refused by the Bloom filter) or `miss` (this caller loaded the row, there being no
entry or one due for refresh, or waited for the caller that did: a wait also counts one
`adbm_cache_stampede_waits_total`).

Entries are JSON: `{"v": value or null, "exp": logical expiry (ms since the epoch), "d": how
long the last load took (ms)}`.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from reference_service.cache.bloom import BloomShape
from reference_service.observability import metrics

Loader = Callable[[], Awaitable[dict[str, Any] | None]]
"""Reads the row from the database; None when it does not exist (for this tenant)."""


def _script(name: str) -> str:
    return resources.files("reference_service.cache").joinpath(name).read_text()


READ_SCRIPT = _script("read.lua")
"""A read's one round trip: the filter's verdict, the entry and its generation."""
BLOOM_SCRIPT = _script("bloom.lua")
"""The filter's bits: `add` or `check` one item's positions."""


@dataclass(frozen=True)
class CachePolicy:
    ttl_seconds: float
    null_ttl_seconds: float
    jitter: float
    lease_ms: int
    beta: float = 1.0
    """XFetch's eagerness: 1 is the paper's default; above 1 refreshes earlier."""
    stale_factor: float = 1.0
    """An entry stays in Redis `(1 + stale_factor) * ttl`: the stale part is what is served
    while one caller rebuilds."""


@dataclass
class CacheStats:
    hits: int = 0
    stale_served: int = 0
    refused_by_filter: int = 0
    loads: int = 0
    waits: int = 0
    coalesced: int = 0
    """Misses that joined this process's wait for the same key instead of waiting on their own."""


@dataclass
class _Keys:
    bloom: str
    built: str
    entry: str
    generation: str
    lock: str


@dataclass
class ReadThrough:
    redis: Redis
    prefix: str
    namespace: str
    policy: CachePolicy
    shape: BloomShape
    rng: Callable[[], float] = random.random
    stats: CacheStats = field(default_factory=CacheStats)

    def __post_init__(self) -> None:
        # The children of this cache's series, looked up once (`labels()` locks on each call).
        self._lookups = {
            result: metrics.CACHE_LOOKUPS.labels(self.namespace, result)
            for result in ("hit", "negative_hit", "stale", "filtered", "miss")
        }
        self._waits = metrics.CACHE_STAMPEDE_WAITS.labels(self.namespace)
        self._pending: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._read = self.redis.register_script(READ_SCRIPT)
        self._store = self.redis.register_script(_script("store.lua"))
        self._unlock = self.redis.register_script(_script("unlock.lua"))
        self._invalidate = self.redis.register_script(_script("invalidate.lua"))
        self._bloom = self.redis.register_script(BLOOM_SCRIPT)

    def keys(self, tenant_id: UUID, item_id: str) -> _Keys:
        entry = f"{self.prefix}cache:{self.namespace}:{tenant_id}:{item_id}"
        bloom = f"{self.prefix}bloom:{self.namespace}:{tenant_id}"
        return _Keys(bloom, f"{bloom}:built", entry, f"{entry}:gen", f"{entry}:lock")

    # --- reads --------------------------------------------------------------------------------

    def read_call(self, tenant_id: UUID, item_id: str) -> tuple[list[str], list[int]]:
        """The keys and arguments of `READ_SCRIPT` for one item: for a caller that sends the
        read in a round trip of its own making, and hands its reply to `get` as `first`."""
        keys = self.keys(tenant_id, item_id)
        return (
            [keys.bloom, keys.built, keys.entry, keys.generation],
            self.shape.positions(item_id),
        )

    async def get(
        self,
        tenant_id: UUID,
        item_id: str,
        loader: Loader,
        *,
        on_unbuilt: Callable[[], None] | None = None,
        first: Sequence[Any] | None = None,
    ) -> dict[str, Any] | None:
        """The cached value, loaded by `loader` when needed; `on_unbuilt` is called when the
        tenant's filter is not built (yet, or any more), for the caller to build it. `first`
        is the reply of `READ_SCRIPT` to `read_call`, when the caller already has it."""
        keys = self.keys(tenant_id, item_id)
        if first is None:
            read_keys, positions = self.read_call(tenant_id, item_id)
            first = await self._read(keys=read_keys, args=positions)
        verdict, raw, generation = first
        if verdict == -1 and on_unbuilt is not None:
            on_unbuilt()
        if verdict == 0:
            self.stats.refused_by_filter += 1
            self._lookups["filtered"].inc()
            return None
        if raw is not None:
            entry = json.loads(raw)
            if not self._should_refresh(entry):
                self.stats.hits += 1
                self._lookups["hit" if entry["v"] is not None else "negative_hit"].inc()
                return _value(entry)
            token = await self._lock(keys)
            if token is None:
                self.stats.stale_served += 1
                self._lookups["stale"].inc()
                return _value(entry)
            return await self._rebuild(keys, token, loader)
        return await self._shared_wait_or_build(keys, loader, generation)

    async def _shared_wait_or_build(
        self, keys: _Keys, loader: Loader, generation: bytes | str
    ) -> dict[str, Any] | None:
        """`_wait_or_build`, once per process and key however many callers miss it together:
        the others await the same task, so a cold hot key costs this process one mutex attempt
        and one waiter polling Redis, not one each (1,000 pollers kept the loop too busy to
        finish the rebuild they were waiting for). The task is shielded: a caller that goes
        away cancels only its own wait. Keys hold the tenant, so only one tenant's callers
        ever share a task."""
        task = self._pending.get(keys.entry)
        if task is None:
            task = asyncio.ensure_future(self._wait_or_build(keys, loader, generation))
            self._pending[keys.entry] = task
            task.add_done_callback(lambda _: self._pending.pop(keys.entry, None))
        else:
            # A joiner waits for this process's caller: its lookup is a miss, and a wait.
            self.stats.coalesced += 1
            self._lookups["miss"].inc()
            self._waits.inc()
        value = await asyncio.shield(task)
        # Each caller its own dict, as from an entry: none can change what another was given.
        return None if value is None else dict(value)

    def _should_refresh(self, entry: dict[str, Any]) -> bool:
        """XFetch: true past the logical expiry, and before it with a probability that is
        higher the nearer expiry is and the longer the last load took."""
        now_ms = time.time() * 1000
        delta_ms = float(entry.get("d", 0))
        # 1 - rng() is in (0, 1]: its log is finite and at most 0.
        early_ms = -delta_ms * self.policy.beta * math.log(1.0 - self.rng())
        return now_ms + early_ms >= float(entry["exp"])

    async def _lock(self, keys: _Keys) -> str | None:
        token = secrets.token_hex(16)
        acquired = await self.redis.set(keys.lock, token, nx=True, px=self.policy.lease_ms)
        return token if acquired else None

    async def _rebuild(self, keys: _Keys, token: str, loader: Loader) -> dict[str, Any] | None:
        """Holding the mutex: load unless another holder refreshed the entry meanwhile."""
        try:
            raw, generation = await self.redis.mget(keys.entry, keys.generation)
            if raw is not None:
                entry = json.loads(raw)
                if float(entry["exp"]) > time.time() * 1000 and not self._should_refresh(entry):
                    self.stats.hits += 1
                    self._lookups["hit" if entry["v"] is not None else "negative_hit"].inc()
                    return _value(entry)
            return await self._load(keys, loader, generation or b"0")
        finally:
            await self._unlock(keys=[keys.lock], args=[token])

    async def _load(
        self, keys: _Keys, loader: Loader, generation: bytes | str
    ) -> dict[str, Any] | None:
        started = time.monotonic()
        value = await loader()
        self.stats.loads += 1
        self._lookups["miss"].inc()
        delta_ms = (time.monotonic() - started) * 1000
        ttl = self.policy.ttl_seconds if value is not None else self.policy.null_ttl_seconds
        ttl *= 1 - self.policy.jitter * self.rng()
        entry = {"v": value, "exp": time.time() * 1000 + ttl * 1000, "d": round(delta_ms, 3)}
        lifetime_ms = max(1, round(ttl * 1000 * (1 + self.policy.stale_factor)))
        await self._store(
            keys=[keys.entry, keys.generation],
            args=[json.dumps(entry, separators=(",", ":")), lifetime_ms, generation],
        )
        return value

    async def _wait_or_build(
        self, keys: _Keys, loader: Loader, generation: bytes | str
    ) -> dict[str, Any] | None:
        """No entry at all: build it under the mutex, or wait for whoever holds it. The wait
        ends when the entry appears, or when the mutex is gone (its holder finished without
        storing, or died and its lease ran out): then this caller tries to take it."""
        pause = 0.005
        waited = False
        while True:
            token = await self._lock(keys)
            if token is not None:
                return await self._rebuild(keys, token, loader)
            self.stats.waits += 1
            if not waited:
                waited = True
                self._waits.inc()
            while True:
                await asyncio.sleep(pause)
                # One poller per process and key (`_shared_wait_or_build`): it can afford to
                # look often, so the waiters wake within 20 ms of the entry being stored.
                pause = min(pause * 2, 0.02)
                raw, holder = await self.redis.mget(keys.entry, keys.lock)
                if raw is not None:
                    self._lookups["miss"].inc()
                    return _value(json.loads(raw))
                if holder is None:
                    break

    # --- writes -------------------------------------------------------------------------------

    async def invalidate(self, tenant_id: UUID, item_id: str) -> None:
        """After a write: the next read loads the row again."""
        keys = self.keys(tenant_id, item_id)
        # The generation outlives the longest entry and its stale window.
        longest = max(self.policy.ttl_seconds, self.policy.null_ttl_seconds)
        lifetime_ms = round(longest * 1000 * (2 + self.policy.stale_factor))
        await self._invalidate(keys=[keys.entry, keys.generation], args=[lifetime_ms])

    async def remember(self, tenant_id: UUID, item_id: str) -> None:
        """Add a new id to the tenant's filter; call it before the insert commits, so no read
        after the commit is refused (a rolled-back id only costs a false positive)."""
        keys = self.keys(tenant_id, item_id)
        await self._bloom(keys=[keys.bloom], args=["add", *self.shape.positions(item_id)])

    async def build_filter(
        self, tenant_id: UUID, ids: AsyncIterable[str], *, ttl_seconds: float | None = None
    ) -> int:
        """Fill the tenant's filter with every existing id, then mark it built (from then on it
        refuses ids it does not hold), for `ttl_seconds` if given. Returns how many ids were
        added."""
        keys = self.keys(tenant_id, "")
        count = 0
        async for item_id in ids:
            await self._bloom(keys=[keys.bloom], args=["add", *self.shape.positions(item_id)])
            count += 1
        expiry = None if ttl_seconds is None else max(1, round(ttl_seconds * 1000))
        await self.redis.set(keys.built, "1", px=expiry)
        return count


def _value(entry: dict[str, Any]) -> dict[str, Any] | None:
    value = entry["v"]
    return None if value is None else dict(value)
