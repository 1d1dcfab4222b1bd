"""How the operator scales with the number of BackendServices, against the emulated API server.

    python bench/operator_scale.py [--sizes 100 1000] [--idle-seconds 60] [--postgres-url URI]

For each N (a fresh emulator each time) this process serves `tests.operator.emulator` on
127.0.0.1 and plays kube-controller-manager's Deployment controller; the operator runs as the real
CLI in a subprocess (`adbm-operator run -A`), so its peak RSS (VmHWM) and CPU are its own. Steps:

1. baseline: a client subprocess applies, GETs and LISTs the same children the operator will
   apply, straight at a fresh emulator: what the API calls cost here, to read the operator's
   time against;
2. N BackendServices are created at once over `--namespaces` namespaces, each with its own
   database and app role on a real PostgreSQL, with the Secrets a platform team provides and the
   migration Jobs run as their pods would (`bench/scale_platform.py`), and the wall time until
   every one has Ready=True (which needs DatabaseReady=True) is measured;
3. requests are counted by who sent them (User-Agent: `adbm-operator` is the operator's own
   client, `kopf/...` is Kopf, anything else is this benchmark) and by verb;
4. after everything is Ready and quiet, the operator's writes during an idle window are counted:
   they must be 0.

The Deployment controller marks every new Deployment generation available at once (or after
`--rollout-seconds`, as pods would take), through PATCH /status as kube-controller-manager does.

Three costs of the test emulator that grow with the run and would be charged to the operator are
taken out here, without changing any answer: kmock's per-request scan of its request log, its
per-GET scan of the whole store (and the emulator's per-LIST one), and pure-Python YAML parsing of
apply bodies (see `BenchEmulator` and `_fast_safe_load`). What remains is still a single-threaded
Python API server on the same machine as the operator: read absolute times against the baseline.

The emulated cluster and the Deployment controller are `bench/scale_cluster.py`, the baseline
client and one operator run `bench/scale_harness.py`, the tables `bench/scale_report.py`.

The exit status is non-zero only for a broken run (the operator died, not all Ready before the
timeout, writes while idle), never for slowness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import traceback
from datetime import UTC, datetime
from pathlib import Path

from scale_cluster import bodies
from scale_harness import Result, baseline_client, run_baseline, run_operator
from scale_report import details, table


async def main_async(args: argparse.Namespace) -> int:
    # SIGTERM unwinds like Ctrl-C: the operator is stopped and the run's databases dropped.
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    workdir = Path(tempfile.mkdtemp(prefix="adbm-bench-"))
    results: list[Result] = []
    broken = False
    print(
        f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, nproc {os.cpu_count()}, "
        f"Python {sys.version.split()[0]}, logs in {workdir}",
        file=sys.stderr,
    )
    for n in args.sizes:
        result = Result(n)
        results.append(result)
        try:
            print(f"N={n}: baseline", file=sys.stderr)
            result.baseline = await run_baseline(bodies(n, args.namespaces), workdir)
            print(f"N={n}: operator run", file=sys.stderr)
            await run_operator(args, n, workdir, result)
        except Exception as exc:
            traceback.print_exc()
            result.problems.append(f"broken run: {exc!r}")
        broken = broken or bool(result.problems)
        print(details(result), file=sys.stderr)
    print(table(results))
    print()
    for r in results:
        print(details(r))
    if not broken and not (args.keep_logs or args.operator_profile or args.operator_tracemalloc):
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"\nlogs kept in {workdir}")
    return 1 if broken else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100])
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument(
        "--ready-timeout", type=float, default=1800.0, help="per N; past it the run is broken"
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=600.0,
        help="per N: how long after all Ready the operator may stay busy; past it, broken",
    )
    parser.add_argument(
        "--rollout-seconds",
        type=float,
        default=0.0,
        help="how long each Deployment generation takes to become available (default: at once)",
    )
    parser.add_argument(
        "--operator-profile",
        action="store_true",
        help="run the operator under cProfile (slower); the stats are kept with the logs",
    )
    parser.add_argument(
        "--postgres-url",
        help="the admin's libpq URI of an existing server to provision on (e.g."
        " postgresql://postgres@127.0.0.1:5432/postgres); default: a dedicated server per N",
    )
    parser.add_argument(
        "--operator-tracemalloc",
        action="store_true",
        help="run the operator with tracemalloc (bench/traced_operator.py); its snapshot after"
        " the idle window is kept with the logs",
    )
    parser.add_argument(
        "--operator-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the operator process only (repeatable)",
    )
    parser.add_argument("--tracemalloc-wait", type=float, default=20.0, help=argparse.SUPPRESS)
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--baseline-client", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_client:
        url, objects_file, concurrency = args.baseline_client
        rates = asyncio.run(baseline_client(url, Path(objects_file), int(concurrency)))
        print(json.dumps(rates))
        return 0
    # Many sockets at once: the operator, the baseline and the emulator each hold hundreds.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
