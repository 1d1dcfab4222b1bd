"""Rate-limit decisions: the service's limiter against slowapi and `limits`, on one Redis.

Each limiter decides for one hot scope (as every request of one tenant does), with a quota no
run reaches, so every decision is a full admit. Two phases, interleaved over rounds:

- throughput: 32 decisions in flight in one event loop (as 32 concurrent requests of one
  service process would make them): decisions per second, and the p99 under that load;
- added latency: one decision at a time: p50/p99 of what a decision adds to a request.

Redis runs on its own core (a dedicated redis-server started for the run), the benchmark on the
other. Per decision: Redis commands (`INFO commandstats`) and round trips (TCP segments this
process sent to Redis, see `counters.py`). The service's limiter also reports how many
decisions it did not take from Redis (`source` local or unavailable): on a healthy Redis that
must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis
import redis.asyncio

from bench import counters, local_servers, results

Decide = Callable[[], Awaitable[bool]]
LIMIT = "100000000/second"
ROUTE = "/api/v2/products/{product_id}"


@dataclass
class Limiter:
    name: str
    make: Callable[[str], tuple[Decide, Callable[[], int]]]
    """From a Redis URL: the decision, and a count of decisions not decided by Redis."""
    runs: list[dict[str, float]] = field(default_factory=list)


def service_limiter(url: str) -> tuple[Decide, Callable[[], int]]:
    """The service's limiter as `create_app` wires it; the one place that knows its API."""
    from reference_service.app import REDIS_TIMEOUT_SECONDS
    from reference_service.http.ratelimit import RateLimiter
    from reference_service.policy import Quota, RateLimitPolicy

    client = redis.asyncio.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
    )
    policy = RateLimitPolicy(default=Quota(requests=100_000_000, burst=100_000_000))
    limiter = RateLimiter(client, policy, "bench:")
    not_redis = 0

    async def decide() -> bool:
        nonlocal not_redis
        decision = await limiter.check("tenant:bench", "GET", ROUTE)
        if decision.source != "redis":
            not_redis += 1
        return decision.allowed

    return decide, lambda: not_redis


def slowapi_limiter(url: str) -> tuple[Decide, Callable[[], int]]:
    """slowapi's decision: its `limits` strategy over a synchronous Redis client, called inside
    the event loop, exactly the call `Limiter.__evaluate_limits` makes per limit."""
    from limits import parse
    from slowapi import Limiter as SlowLimiter

    limiter = SlowLimiter(key_func=lambda: "bench", storage_uri=url)
    item = parse(LIMIT)

    async def decide() -> bool:
        return limiter.limiter.hit(item, "bench", ROUTE)

    return decide, lambda: 0


def limits_limiter(strategy: str) -> Callable[[str], tuple[Decide, Callable[[], int]]]:
    def make(url: str) -> tuple[Decide, Callable[[], int]]:
        from limits import parse
        from limits.aio import strategies
        from limits.storage import storage_from_string

        # redis-py, the client the service uses (the default, coredis, is not installed).
        storage = storage_from_string("async+" + url, implementation="redispy")
        limiter = getattr(strategies, strategy)(storage)
        item = parse(LIMIT)

        async def decide() -> bool:
            allowed: bool = await limiter.hit(item, "bench", ROUTE)
            return allowed

        return decide, lambda: 0

    return make


async def _phase(decide: Decide, concurrency: int, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            start = time.perf_counter()
            if not await decide():
                raise RuntimeError("a decision refused a request: the quota is too small")
            latencies.append(time.perf_counter() - start)
            # As a request would, give the loop back between decisions: a decision that does
            # not suspend (a local fallback) must not starve the others' Redis replies.
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] * 1000


async def _measure(
    limiter: Limiter, rd: local_servers.Redis, client: redis.Redis, args: argparse.Namespace
) -> dict[str, float]:
    decide, not_redis = limiter.make(rd.url)
    await _phase(decide, args.concurrency, 0.5)  # connections and scripts loaded
    pid = os.getpid()
    segs0, cmds0 = counters.segments(pid, rd.port), counters.redis_commands(client)
    fallbacks0 = not_redis()
    count, under_load = await _phase(decide, args.concurrency, args.seconds)
    fallbacks = not_redis() - fallbacks0
    segs1, cmds1 = counters.segments(pid, rd.port), counters.redis_commands(client)
    _, alone = await _phase(decide, 1, args.seconds / 2)
    return {
        "dps": count / args.seconds,
        "redis_dps": (count - fallbacks) / args.seconds,
        "load_p99_ms": _p(under_load, 99),
        "p50_ms": _p(alone, 50),
        "p99_ms": _p(alone, 99),
        # Per decision Redis took: a local fallback decision costs Redis nothing.
        "cmds": (cmds1 - cmds0) / max(1, count - fallbacks),
        "rt": counters.segments_delta(segs0, segs1)[0] / max(1, count - fallbacks),
        "not_redis": fallbacks,
    }


def _report(limiters: list[Limiter], args: argparse.Namespace) -> str:
    def med(lim: Limiter, key: str) -> float:
        return statistics.median(r[key] for r in lim.runs)

    rows = [
        [
            lim.name,
            f"{med(lim, 'dps'):,.0f}",
            f"{med(lim, 'redis_dps'):,.0f}",
            f"{med(lim, 'load_p99_ms'):.2f}",
            f"{med(lim, 'p50_ms'):.3f}",
            f"{med(lim, 'p99_ms'):.3f}",
            f"{med(lim, 'cmds'):.2f}",
            f"{med(lim, 'rt'):.2f}",
            f"{sum(r['not_redis'] for r in lim.runs):.0f}",
        ]
        for lim in limiters
    ]
    header = [
        "limiter",
        f"decisions/s ({args.concurrency} in flight)",
        "of them decided by Redis /s",
        f"p99 ms ({args.concurrency} in flight)",
        "added p50 ms (1 at a time)",
        "added p99 ms (1 at a time)",
        "Redis commands per Redis decision",
        "Redis round trips per Redis decision",
        f"decisions not from Redis ({args.concurrency} in flight, all rounds)",
    ]
    return (
        f"{args.rounds} interleaved rounds of {args.seconds:g} s (+ {args.seconds / 2:g} s one at"
        f" a time), medians; benchmark on core {args.cpu}, Redis on core {args.redis_cpu}.\n\n"
        + results.table(header, rows)
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput phase per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--cpu", default="0", help="core the benchmark runs on")
    parser.add_argument("--redis-cpu", default="1", help="core Redis runs on")
    parser.add_argument("--label", default="full run", help="how RESULTS.md labels this run")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--seconds > 0, --rounds >= 1 and --concurrency >= 1")
    limiters = [
        Limiter("adbm RateLimiter (GCRA, one EVALSHA)", service_limiter),
        Limiter("slowapi (fixed window, sync Redis)", slowapi_limiter),
        Limiter("limits async fixed window", limits_limiter("FixedWindowRateLimiter")),
        Limiter("limits async moving window", limits_limiter("MovingWindowRateLimiter")),
    ]
    os.sched_setaffinity(0, {int(c) for c in args.cpu.split(",")})
    try:
        with (
            local_servers.redis(args.redis_cpu) as rd,
            contextlib.closing(redis.Redis(port=rd.port)) as client,
        ):
            for _ in range(args.rounds):
                for lim in limiters:
                    lim.runs.append(asyncio.run(_measure(lim, rd, client, args)))
                    print(f"{lim.name}: {lim.runs[-1]['dps']:,.0f}/s", file=sys.stderr)
                    client.flushall()
    except local_servers.Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = _report(limiters, args)
    print(text)
    if not args.no_record:
        results.record(
            "Rate limiters (bench/ratelimit.py)", args.label, text, ["redis", "slowapi", "limits"]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
