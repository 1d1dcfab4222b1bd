"""The one retry policy of the operator: how long to wait before attempt `n` after a temporary
failure. Kopf's handler retries and the operator's own retries of watch-triggered reconciles both
use it, so an API server that is down is approached the same way from every path."""

from __future__ import annotations

# Quick at first (a conflict or a brief 503 clears within a second), then no more than one
# attempt a minute per object, so an outage is not made worse by thousands of objects retrying.
DELAYS_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


def delay(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first); capped, never ending."""
    return DELAYS_SECONDS[min(max(attempt, 0), len(DELAYS_SECONDS) - 1)]
