"""UUIDv7 ids: layout per RFC 9562 and creation order within a process."""

from __future__ import annotations

import time
import uuid

import pytest

from reference_service.db import uuid7 as module
from reference_service.db.uuid7 import uuid7


def timestamp_ms(value: uuid.UUID) -> int:
    """The Unix time in milliseconds of a UUIDv7: its top 48 bits (RFC 9562 section 5.7)."""
    if value.version != 7:
        raise ValueError(f"{value} is not a version 7 UUID")
    return value.int >> 80


def test_version_variant_and_timestamp() -> None:
    before = time.time_ns() // 1_000_000
    value = uuid7()
    after = time.time_ns() // 1_000_000
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert before <= timestamp_ms(value) <= after
    # Canonical text: the version nibble is the first of the third group, the variant the
    # first of the fourth (8, 9, a or b).
    text = str(value)
    assert text[14] == "7"
    assert text[19] in "89ab"


def test_ids_sort_in_creation_order_and_are_unique() -> None:
    ids = [uuid7() for _ in range(50_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    # Same order as text and as bytes, which is how Postgres compares uuid values.
    assert [str(i) for i in ids] == sorted(str(i) for i in ids)
    assert [i.bytes for i in ids] == sorted(i.bytes for i in ids)


def test_same_millisecond_increments_the_random_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_000 * 1_000_000)
    first, second, third = uuid7(), uuid7(), uuid7()
    assert timestamp_ms(first) == timestamp_ms(second) == timestamp_ms(third)
    assert second.int == first.int + 1  # the random part counts up (no carry into rand_a)
    assert first < second < third


def test_clock_going_backwards_still_sorts_after(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_800_000_000_000]
    monkeypatch.setattr(time, "time_ns", lambda: now[0] * 1_000_000)
    first = uuid7()
    now[0] -= 5_000  # NTP step backwards by five seconds
    second = uuid7()
    assert second > first
    assert timestamp_ms(second) == timestamp_ms(first)


def test_random_overflow_moves_to_the_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "time_ns", lambda: 1_900_000_000_000 * 1_000_000)
    first = uuid7()
    monkeypatch.setattr(module, "_last_rand", (1 << 74) - 1)
    second = uuid7()
    assert timestamp_ms(second) == timestamp_ms(first) + 1
    assert second > first


def test_timestamp_of_another_version_is_refused() -> None:
    with pytest.raises(ValueError, match="not a version 7"):
        timestamp_ms(uuid.uuid4())
