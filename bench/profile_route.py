"""One route of the service under `wrk`, with its server CPU per request and, optionally, a
py-spy profile: `python -m bench.profile_route uncached --seconds 10 --pyspy stacks.txt`.

The quick loop for work on the request path: the same servers, seed and pinning as
`service_load` (which stays the benchmark of record), one case, a few short rounds, the median
CPU per request. With `--pyspy` the last round runs under `py-spy record --format raw` (the
event-loop thread's top entries are printed by `bench.pyspy_top`).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from bench import pyspy_top, service_load, wrk_run

CASES = {
    "bare": 0,
    "select": 1,
    "slowapi": 2,
    "insert": 3,
    "cached": 4,
    "uncached": 5,
    "list": 6,
    "deep": 7,
    "post": 8,
    "patch": 9,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="+", choices=sorted(CASES))
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pyspy", type=Path, help="write the last round's raw stacks here")
    args = parser.parse_args(argv)
    load_args = service_load._parse_args(["--seconds", str(args.seconds), "--deep", "1000"])
    wrk_run.require_wrk()
    spy_binary = _py_spy() if args.pyspy is not None else None
    with contextlib.ExitStack() as stack:
        env, cases = service_load.start(load_args, stack)
        for name in args.cases:
            case = cases[CASES[name]]
            service_load._measure(env, case, 0, 1)
            runs = [service_load._measure(env, case, r, args.seconds) for r in range(args.rounds)]
            cpu = statistics.median(run["cpu_us"] for run in runs)
            rps = statistics.median(run["rps"] for run in runs)
            each = ", ".join(f"{run['cpu_us']:,.0f}" for run in runs)
            print(f"{case.name}: {rps:,.0f} RPS, server CPU {cpu:,.0f} µs/req (rounds: {each})")
            if args.pyspy is not None:
                out = args.pyspy.with_suffix(f".{name}.txt")
                spy = subprocess.Popen(
                    [
                        str(spy_binary),
                        "record",
                        "-r",
                        "200",
                        "--nonblocking",
                        "--duration",
                        str(max(1, round(args.seconds) - 1)),
                        "--format",
                        "raw",
                        "-o",
                        str(out),
                        "-p",
                        str(env.pids[case.server]),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                service_load._measure(env, case, 99, args.seconds)
                spy.wait(60)
                pyspy_top.main([str(out), "45"])
    return 0


def _py_spy() -> str:
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("error: py-spy is not installed: pip install py-spy")
    return found


if __name__ == "__main__":
    sys.exit(main())
