"""Bloom filter sizing and bit positions (the bits themselves live in Redis, see bloom.lua)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BloomShape:
    bits: int
    hashes: int

    @classmethod
    def for_capacity(cls, capacity: int, error_rate: float) -> BloomShape:
        """The optimal shape for `capacity` items at false-positive rate `error_rate`:
        m = -n ln p / (ln 2)^2 bits and k = (m / n) ln 2 hash functions."""
        if capacity < 1 or not 0 < error_rate < 1:
            raise ValueError("capacity must be positive and error_rate in (0, 1)")
        bits = math.ceil(-capacity * math.log(error_rate) / math.log(2) ** 2)
        if bits > 2**32:
            raise ValueError("a Redis bitmap holds at most 2^32 bits")
        return cls(bits=bits, hashes=max(1, round(bits / capacity * math.log(2))))

    def positions(self, item: str) -> list[int]:
        """The item's bit positions, by double hashing (Kirsch-Mitzenmacher): two 64-bit halves
        of one SHA-256 stand in for k independent hash functions."""
        digest = hashlib.sha256(item.encode()).digest()
        h1 = int.from_bytes(digest[:8], "big")
        h2 = int.from_bytes(digest[8:16], "big") | 1
        return [(h1 + i * h2) % self.bits for i in range(self.hashes)]
