"""A short in-process cache of API key lookups, positive and negative.

Resolving a key is a database round trip (`db.admin.authenticate`); without a cache every
request pays it, and a client sending wrong keys makes the database do work for nothing. An
entry lives `KEY_CACHE_SECONDS`, so that is how stale an answer can be on each process: a key
revoked at time t is refused by every replica from t + `KEY_CACHE_SECONDS` on (sooner where it
was not cached), and a key created after a failed attempt with the same value works from then
on too. Entries are keyed by the key's SHA-256, as the database stores it, so the process does
not hold keys in the clear any longer than a request does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

from reference_service.db.admin import Principal, hash_key

KEY_CACHE_SECONDS: Final = 5.0
# Bounded whatever the traffic: on overflow expired entries go first, then the oldest half.
_MAX_ENTRIES: Final = 10_000


class Unknown:
    """The cached answer for a key that resolved to nothing (unknown, revoked, malformed)."""


UNKNOWN: Final = Unknown()


class KeyCache:
    def __init__(
        self,
        ttl_seconds: float = KEY_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._entries: dict[bytes, tuple[float, Principal | Unknown]] = {}
        self._pending: dict[bytes, asyncio.Future[Principal | None]] = {}

    def get(self, key: str) -> Principal | Unknown | None:
        """The cached answer for `key`, or None when there is none still fresh."""
        digest = hash_key(key)
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires_at, answer = entry
        if self.clock() >= expires_at:
            del self._entries[digest]
            return None
        return answer

    def put(self, key: str, principal: Principal | None) -> None:
        if len(self._entries) >= _MAX_ENTRIES:
            self._prune()
        answer = UNKNOWN if principal is None else principal
        self._entries[hash_key(key)] = (self.clock() + self.ttl_seconds, answer)

    def in_flight(self, key: str) -> bool:
        """Whether a lookup of `key` is under way in this process (`resolve`)."""
        return hash_key(key) in self._pending

    def resolve(
        self, key: str, lookup: Callable[[], Awaitable[Principal | None]]
    ) -> asyncio.Future[Principal | None]:
        """The answer of `lookup` for `key`, cached when it comes: one lookup per key at a time
        in this process, however many requests with that key arrive while it runs (when an
        entry expires under load, every request in flight would otherwise look it up). The
        lookup is a task of its own: a request that goes away does not cancel it for the
        others (await it through `asyncio.shield`)."""
        digest = hash_key(key)
        task = self._pending.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._resolve(key, lookup))
            self._pending[digest] = task
            task.add_done_callback(lambda _: self._pending.pop(digest, None))
        return task

    async def _resolve(
        self, key: str, lookup: Callable[[], Awaitable[Principal | None]]
    ) -> Principal | None:
        principal = await lookup()
        self.put(key, principal)
        return principal

    def _prune(self) -> None:
        now = self.clock()
        kept = {k: v for k, v in self._entries.items() if v[0] > now}
        if len(kept) >= _MAX_ENTRIES:
            # Still full of fresh entries (a flood of distinct keys): keep the newer half.
            kept = dict(list(kept.items())[len(kept) // 2 :])
        self._entries = kept
