"""The operator CLI with tracemalloc on: where its memory goes (`--operator-tracemalloc`).

    python bench/traced_operator.py SNAPSHOT run -A ...     # as `adbm-operator run -A ...`
    python bench/traced_operator.py --report SNAPSHOT [--top 25]

On SIGUSR1 the running operator writes a tracemalloc snapshot to SNAPSHOT (the benchmark sends
it once every BackendService is Ready and the idle window is over, i.e. with everything the
operator keeps per object in memory). `--report` prints the biggest allocation sites, by line
and by package, and the total traced against the traceback depth recorded (`BENCH_TRACE_FRAMES`,
default 1: each allocation is charged to the line that made it).

tracemalloc sees Python allocations only (not the interpreter's arenas' slack, nor C libraries
such as libpq or OpenSSL): compare its total with the RSS to see what it cannot see. The census
written beside the snapshot also holds pymalloc's own account (`sys._debugmallocstats`: arenas
allocated, pools and blocks in use), which tells live objects from arena slack.
`BENCH_TRACE_FRAMES=0` runs without tracemalloc (at full speed; the census only), for sizes a
traced run would take hours at.
"""

from __future__ import annotations

import argparse
import collections
import gc
import inspect
import os
import signal
import sys
import tracemalloc
from pathlib import Path


def run(snapshot: Path, argv: list[str]) -> int:
    frames = int(os.environ.get("BENCH_TRACE_FRAMES", "1"))
    if frames > 0:
        tracemalloc.start(frames)

    def dump(signum: int, frame: object) -> None:
        del signum, frame
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(snapshot))
        # Written whole, then renamed: the benchmark waits for the file to appear.
        partial = snapshot.with_suffix(".census.partial")
        partial.write_text(census() + pymalloc_stats())
        partial.rename(snapshot.with_suffix(".census.txt"))

    signal.signal(signal.SIGUSR1, dump)
    samples = os.environ.get("BENCH_MEMORY_SAMPLES")
    if samples:
        _sample_memory(Path(samples))
    collect = float(os.environ.get("BENCH_GC_SECONDS", "0"))
    if collect > 0:
        _collect_every(collect)
    trim = float(os.environ.get("BENCH_MALLOC_TRIM_SECONDS", "0"))
    if trim > 0:
        _trim_every(trim)
    from adbm_operator import cli

    return cli.main(argv)


def _sample_memory(path: Path) -> None:
    """Once a second, from a thread: seconds since start, VmRSS (kB) and pymalloc's allocated
    blocks (`sys.getallocatedblocks`, cheap), which together tell a peak of live objects from
    arenas that stay allocated after their objects are gone."""
    import threading
    import time

    started = time.monotonic()

    def loop() -> None:
        with path.open("w") as out:
            while True:
                out.write(
                    f"{time.monotonic() - started:.0f} {_rss_kb()} {sys.getallocatedblocks()}\n"
                )
                out.flush()
                time.sleep(1)

    threading.Thread(target=loop, daemon=True, name="bench-memory-samples").start()


def _collect_every(seconds: float) -> None:
    """A full `gc.collect()` every `seconds` from a thread (an experiment: how much of the
    growth is garbage in reference cycles waiting for the collector's oldest generation);
    each collection's count and time go to standard error."""
    import threading
    import time

    def loop() -> None:
        while True:
            time.sleep(seconds)
            started = time.perf_counter()
            found = gc.collect()
            took = time.perf_counter() - started
            print(f"bench gc: {found} unreachable, {took * 1000:.0f} ms", file=sys.stderr)

    threading.Thread(target=loop, daemon=True, name="bench-gc").start()


def _trim_every(seconds: float) -> None:
    """glibc's `malloc_trim(0)` every `seconds` from a thread (an experiment: with
    `PYTHONMALLOC=malloc`, freed memory inside the heap goes back to the system)."""
    import ctypes
    import threading
    import time

    libc = ctypes.CDLL("libc.so.6")

    def loop() -> None:
        while True:
            time.sleep(seconds)
            libc.malloc_trim(0)

    threading.Thread(target=loop, daemon=True, name="bench-malloc-trim").start()


def _describe(obj: object) -> str:
    if inspect.iscoroutine(obj):
        frame = obj.cr_frame
        where = f" line {frame.f_lineno}" if frame is not None else ""
        return (
            f"coroutine {obj.cr_code.co_qualname} ({obj.cr_code.co_filename.split('/')[-1]}{where})"
        )
    if isinstance(obj, dict):
        return "dict with keys " + ",".join(sorted(map(str, obj))[:6])
    return type(obj).__module__ + "." + type(obj).__qualname__


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pymalloc_stats() -> str:
    """pymalloc's arenas, pools and blocks (`sys._debugmallocstats`, which prints to the C
    stderr: captured through a temporary file on fd 2)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    # The per-size-class table is long; its totals (the last part) say how full arenas are.
    tail = text[text.find("# arenas allocated total") :] if "# arenas" in text else text
    return "pymalloc (sys._debugmallocstats):\n" + tail


def census() -> str:
    """Live objects by type, and who holds the Kubernetes objects (dicts with `metadata`) that
    are not part of another one: what keeps API responses alive."""
    before, (current, peak) = _rss_kb(), tracemalloc.get_traced_memory()
    collected = gc.collect()
    after_gc = _rss_kb()
    # What glibc holds free but has not given back (its heaps' free pages, madvised away by
    # malloc_trim): freed memory, not live objects.
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    lines = [
        f"traced now {current / 2**20:.1f} MiB, traced peak {peak / 2**20:.1f} MiB;"
        f" VmRSS {before / 1024:.1f} MB; gc.collect() found {collected:,} unreachable objects,"
        f" VmRSS after it {after_gc / 1024:.1f} MB, after malloc_trim(0)"
        f" {_rss_kb() / 1024:.1f} MB",
    ]
    objects = gc.get_objects()
    by_type = collections.Counter(type(o).__qualname__ for o in objects)
    sizes: collections.Counter[str] = collections.Counter()
    for o in objects:
        sizes[type(o).__qualname__] += sys.getsizeof(o)
    lines.append(
        f"live objects by type ({len(objects):,} tracked by gc, their own sizes"
        f" {sum(sizes.values()) / 2**20:.1f} MiB):"
    )
    lines += [
        f"  {count:>9,} {name} ({sizes[name] / 2**20:.1f} MiB)"
        for name, count in by_type.most_common(25)
    ]
    bodies = [o for o in objects if isinstance(o, dict) and "metadata" in o and "kind" in o]
    holders: collections.Counter[str] = collections.Counter()
    step = max(1, len(bodies) // 400)
    for index in range(0, len(bodies), step):
        body = bodies[index]
        for ref in gc.get_referrers(body):
            if ref is objects or ref is bodies:
                continue
            holder = _describe(ref)
            if isinstance(ref, dict):
                # One level further up: what holds the dict holding the body.
                ups = [_describe(u) for u in gc.get_referrers(ref) if u is not objects]
                ups = [u for u in ups if not u.startswith("builtins.frame")]
                holder += " <- " + (ups[0] if ups else "?")
            holders[f"{body.get('kind')}: {holder}"] += 1
    lines.append(f"Kubernetes object dicts alive: {len(bodies):,}; holders of a sample:")
    lines += [f"  {count:>5} {name[:220]}" for name, count in holders.most_common(30)]
    # Containers decoded from API responses that are still alive, by what holds them.
    decoded = []
    for o in objects:
        if isinstance(o, (dict, list)):
            tb = tracemalloc.get_object_traceback(o)
            if tb is not None and tb[-1].filename.endswith("decoder.py"):
                decoded.append(o)
    roots: collections.Counter[str] = collections.Counter()
    ids = {id(o) for o in decoded}
    for index in range(0, len(decoded), max(1, len(decoded) // 300)):
        o = decoded[index]
        outside = [r for r in gc.get_referrers(o) if id(r) not in ids and r is not objects]
        outside = [r for r in outside if r is not decoded and type(r).__name__ != "frame"]
        for ref in outside[:2]:
            holder = _describe(ref)
            if isinstance(ref, dict):
                ups = [_describe(u) for u in gc.get_referrers(ref) if u is not objects]
                holder += " <- " + ",".join(u for u in ups[:2] if not u.startswith("builtins.list"))
            roots[holder[:200]] += 1
    lines.append(f"decoded containers alive: {len(decoded):,}; outside holders of a sample:")
    lines += [f"  {count:>5} {name}" for name, count in roots.most_common(20)]
    return "\n".join(lines) + "\n"


def package(filename: str) -> str:
    """`kopf`, `aiohttp`, `adbm_operator/...`: who the file belongs to."""
    parts = Path(filename).parts
    for marker in ("site-packages", "lib"):
        if marker in parts:
            rest = parts[parts.index(marker) + 1 :]
            if marker == "site-packages" or (rest and rest[0].startswith("python")):
                rest = rest[1:] if marker == "lib" else rest
                return rest[0] if rest else filename
    for name in ("adbm_operator", "reference_service", "tests"):
        if name in parts:
            return "/".join(parts[parts.index(name) : parts.index(name) + 2])
    return filename


def report(snapshot_path: Path, top: int) -> str:
    snapshot = tracemalloc.Snapshot.load(str(snapshot_path))
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snapshot.statistics("lineno")
    total = sum(s.size for s in stats)
    lines = [f"traced: {total / 2**20:.1f} MiB in {sum(s.count for s in stats):,} blocks", ""]
    lines.append("| MiB | blocks | where |")
    lines.append("|---|---|---|")
    for stat in stats[:top]:
        frame = stat.traceback[0]
        where = f"{package(frame.filename)}: {Path(frame.filename).name}:{frame.lineno}"
        lines.append(f"| {stat.size / 2**20:.2f} | {stat.count:,} | {where} |")
    if snapshot.traceback_limit > 1:
        lines += ["", "Biggest by whole traceback (innermost frames of adbm and Kopf first):", ""]
        for stat in snapshot.statistics("traceback")[:top]:
            ours = [
                f"{Path(f.filename).name}:{f.lineno}"
                for f in stat.traceback
                if any(p in f.filename for p in ("adbm_operator", "kopf", "aiohttp", "psycopg"))
            ]
            first = stat.traceback[0]
            lines.append(
                f"- {stat.size / 2**20:.2f} MiB, {stat.count:,} blocks: "
                f"{Path(first.filename).name}:{first.lineno} <- " + " <- ".join(ours[-4:])
            )
    by_package: collections.Counter[str] = collections.Counter()
    for stat in snapshot.statistics("filename"):
        by_package[package(stat.traceback[0].filename)] += stat.size
    lines += ["", "| MiB | package |", "|---|---|"]
    for name, size in by_package.most_common(12):
        lines.append(f"| {size / 2**20:.2f} | {name} |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 2 and not sys.argv[1].startswith("-"):
        return run(Path(sys.argv[1]), sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="or: traced_operator.py SNAPSHOT run -A ... (the operator's own arguments)",
    )
    parser.add_argument("--report", type=Path, required=True, help="a snapshot to report on")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(report(args.report, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
