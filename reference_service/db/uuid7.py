"""UUID version 7 (RFC 9562): time-ordered identifiers generated in the application.

Primary keys are generated here rather than by Postgres so an id is known before the INSERT
(for idempotency records and outbox payloads) and so that ids sort by creation time, which keeps
B-tree inserts on the right-hand edge of the index and breaks ties in keyset pagination.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_RAND_BITS = 74  # 12 bits of rand_a + 62 bits of rand_b
_RAND_MASK = (1 << _RAND_BITS) - 1

_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def _next(now_ms: int) -> tuple[int, int]:
    """The (millisecond, random) pair for a new id, monotonic within this process.

    RFC 9562 section 6.2, method 1 variant: within the same millisecond the random part is
    incremented instead of redrawn, so ids from one process sort in creation order. If the clock
    goes backwards, or the random part would overflow, the previous millisecond is reused (or
    advanced by one) rather than emitting an id that sorts before an earlier one.
    """
    global _last_ms, _last_rand
    with _lock:
        if now_ms > _last_ms:
            ms = now_ms
            # Leave headroom so that a burst within one millisecond does not overflow: the top
            # bit of the random part starts at zero (2**73 increments before carry).
            rand = int.from_bytes(os.urandom(10), "big") & (_RAND_MASK >> 1)
        else:
            ms = _last_ms
            rand = _last_rand + 1
            if rand > _RAND_MASK:
                ms += 1
                rand = int.from_bytes(os.urandom(10), "big") & (_RAND_MASK >> 1)
        _last_ms, _last_rand = ms, rand
        return ms, rand


def uuid7() -> uuid.UUID:
    """A new UUIDv7: 48-bit Unix time in milliseconds, version 7, RFC variant, 74 random bits."""
    ms, rand = _next(time.time_ns() // 1_000_000)
    rand_a = rand >> 62
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)
