"""An open-loop HTTP/1.1 client: requests start on a fixed schedule, whatever the server does.

wrk2 (fixed-rate wrk) is not packaged by Debian, so this stands in for it. Latency is measured
from each request's scheduled start, not from when a connection became free, so a server that
falls behind shows its queueing in the percentiles (no coordinated omission). The client reports
how late it started requests and how busy its own core was: when both are small, the client was
not the bottleneck.

Run as a script (pinned to its own core), it prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit


class _Connections:
    """At most `limit` keep-alive connections to one server, as wrk2's `-c` or any client's
    pool: a request finding all of them busy waits for one (its latency, counted from its
    scheduled start, includes that wait). Unbounded, a brief stall of the server made the
    client open hundreds of connections, whose set-up then cost the server more than the
    requests did, so the queue fed itself: a runaway no real client with a pool causes."""

    def __init__(self, host: str, port: int, limit: int) -> None:
        self._host, self._port = host, port
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._limit = limit
        self.opened = 0
        self._open = 0

    async def take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._idle.empty() and self._open < self._limit:
            self._open += 1
            self.opened += 1
            try:
                return await asyncio.open_connection(self._host, self._port)
            except OSError:
                self._open -= 1
                raise
        return await self._idle.get()

    def give(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self._idle.put_nowait(conn)

    def drop(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
        """A connection that failed mid-exchange: closed, and its slot free for a new one."""
        self._open -= 1
        if conn is not None:
            conn[1].close()


async def _exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes) -> int:
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def run(
    url: str, rate: float, seconds: float, headers: list[str], connections: int = 32
) -> dict[str, Any]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *headers, "", ""]
    request = "\r\n".join(lines).encode()
    conns = _Connections(host, port, connections)
    latencies: list[float] = []
    lags: list[float] = []
    failures: Counter[str] = Counter()

    async def one(scheduled: float) -> None:
        conn = None
        try:
            conn = await conns.take()
            status = await _exchange(conn, request)
        except (OSError, asyncio.IncompleteReadError) as exc:
            failures[type(exc).__name__] += 1
            conns.drop(conn)
            return
        latencies.append(time.perf_counter() - scheduled)
        conns.give(conn)
        if status >= 400:
            failures[str(status)] += 1

    total = int(rate * seconds)
    tasks: set[asyncio.Task[None]] = set()
    cpu0, start = time.process_time(), time.perf_counter()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, time.perf_counter() - scheduled))
        task = asyncio.create_task(one(scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    sent_by = time.perf_counter()
    if tasks:
        await asyncio.wait(tasks, timeout=30)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    return {
        "rate": rate,
        "sent": total,
        "completed": len(latencies),
        "failures": sum(failures.values()),
        "failure_kinds": dict(failures),
        "offered_rps": total / (sent_by - start),
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "start_lag_p99_ms": percentile(lags, 99) * 1000,
        "start_lag_mean_ms": statistics.fmean(lags) * 1000 if lags else 0.0,
        "client_cpu_share": cpu / wall,
        "connections": conns.opened,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument(
        "--connections", type=int, default=32, help="at most this many connections (as wrk -c)"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.connections < 1:
        print("error: --rate, --seconds and --connections must be positive", file=sys.stderr)
        return 2
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(
        json.dumps(
            asyncio.run(run(args.url, args.rate, args.seconds, args.header, args.connections))
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
