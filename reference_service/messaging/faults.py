"""Crash points for fault-injection tests: the worker kills itself with SIGKILL at a named point.

`ADBM_FAULT_CRASH_AT=<point>` (or `<point>#<n>`, the n-th time the point is reached; default the
first) makes the process SIGKILL itself there, exactly as a node failure would, so a test can
stop a worker between a step's committed effect and its ack, which no external timing can hit
reliably. Unset (always, in a pod) it costs one dictionary lookup. It is read from the process
environment rather than `Settings` because it is not a knob the operator renders.

Points: `before_effect:<step>`, `after_effect:<step>` (the step's transaction committed, the
message not yet acked) and `after_ack:<queue>`.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "ADBM_FAULT_CRASH_AT"

_reached: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    value = os.environ.get(ENV)
    if not value:
        return None
    point, _, count = value.partition("#")
    return point, int(count) if count else 1


def crash_point(point: str) -> None:
    target = _target()
    if target is None or target[0] != point:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] == target[1]:
        # A line of the process like any other (JSON), written before the kill: logging's
        # stream handler flushes every record.
        logging.getLogger(__name__).critical("fault injection: SIGKILL at %s", point)
        os.kill(os.getpid(), signal.SIGKILL)
