"""ISO 4217 currency codes, from `pycountry`'s copy of the maintained list (Debian's
iso-codes), so that a code like `XXY` is refused rather than stored."""

from __future__ import annotations

from typing import Final

import pycountry

CODES: Final[frozenset[str]] = frozenset(c.alpha_3 for c in pycountry.currencies)


def iso_4217(code: str) -> str:
    """`code` itself if it is a current ISO 4217 alphabetic code (pydantic validator)."""
    if code not in CODES:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code
