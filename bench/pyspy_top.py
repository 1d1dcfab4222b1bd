"""The top functions of a py-spy profile: `python -m bench.pyspy_top STACKS.txt [N]`.

STACKS.txt is `py-spy record --format raw` output (one collapsed stack and its sample count a
line). Only the event-loop thread's stacks count (those under uvicorn's `Server.run`), so the
metrics listener's thread does not dilute the shares. Prints each function's inclusive share
(samples with it anywhere on the stack) and self share (samples with it on top), by inclusive
share, then the top self shares.
"""

from __future__ import annotations

import collections
import re
import sys

_FRAME = re.compile(r"(.*) \((.*?):\d+\)$")


def _name(frame: str) -> str:
    found = _FRAME.match(frame)
    if found is None:
        return frame
    path = found.group(2).split("site-packages/")[-1]
    path = path[path.find("reference_service/") :] if "reference_service/" in path else path
    return f"{found.group(1)} ({path})"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    top = int(argv[1]) if len(argv) > 1 else 40
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    with open(argv[0]) as stacks:
        for line in stacks:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack or "Server.run (uvicorn/server.py" not in stack:
                continue
            samples = int(count)
            names = [_name(frame) for frame in stack.split(";")]
            total += samples
            for name in set(names):
                inclusive[name] += samples
            own[names[-1]] += samples
    print(f"{total} samples of the event-loop thread")
    for name, samples in inclusive.most_common(top):
        print(f"{100 * samples / total:5.1f}% incl {100 * own[name] / total:5.1f}% self  {name}")
    print("top self:")
    for name, samples in own.most_common(top // 2):
        print(f"{100 * samples / total:5.1f}% self  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
