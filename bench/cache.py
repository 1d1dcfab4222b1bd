"""A 1,000-way stampede on one hot key: database reads and latency, with and without defences.

1,000 requests for the same product arrive at once (one `asyncio.gather`) when the key is cold
(never cached) or has just expired. Each variant reads through a small interface,
`get(key, load)`, so the benchmark does not depend on how a cache is built:

- no cache: every request reads the database;
- naive read-through: GET, and on a miss load and SET with a TTL (what a cache without
  defences does);
- the service's cache, `reference_service.cache.readthrough.ReadThrough` (a mutex with an
  owner token, stale serving, XFetch), through `service_cache` below, when the module exists on
  this branch; otherwise its rows say so.

The load is a real read of the product through the service's `Database.read` (app role, RLS),
made expensive with `pg_sleep` (`--load-ms`) as a hot key's query usually is; the pool has the
service's default 10 connections. Database reads are counted by the database
(pg_stat_statements calls of the load statement, on a dedicated PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import psycopg
import redis.asyncio
from psycopg import sql

from bench import local_servers, results, service_setup
from reference_service.config import Settings
from reference_service.db import repository
from reference_service.db.pool import Database, Statement
from reference_service.domain import products

Load = Callable[[], Awaitable[dict[str, Any] | None]]
SERVICE_CACHE = "reference_service.cache.readthrough"


class HotKeyCache(Protocol):
    async def get(self, key: str, load: Load) -> dict[str, Any] | None: ...

    async def expire(self, key: str) -> None:
        """Make the key's entry expired, as time would."""


class NoCache:
    async def get(self, key: str, load: Load) -> dict[str, Any] | None:
        return await load()

    async def expire(self, key: str) -> None:
        return None


class NaiveReadThrough:
    def __init__(self, client: redis.asyncio.Redis, ttl_seconds: float) -> None:
        self._redis, self._ttl_ms = client, round(ttl_seconds * 1000)

    async def get(self, key: str, load: Load) -> dict[str, Any] | None:
        import json

        raw = await self._redis.get(f"naive:{key}")
        if raw is not None:
            value: dict[str, Any] | None = json.loads(raw)
            return value
        value = await load()
        await self._redis.set(f"naive:{key}", json.dumps(value), px=self._ttl_ms)
        return value

    async def expire(self, key: str) -> None:
        await self._redis.delete(f"naive:{key}")


def service_cache(
    client: redis.asyncio.Redis, tenant_id: uuid.UUID, ttl_seconds: float
) -> HotKeyCache | None:
    """The service's read-through cache behind `HotKeyCache`; None if this branch has none.
    The one place that knows its API (branch messaging, reference_service/cache/)."""
    if importlib.util.find_spec("reference_service.cache") is None:
        return None
    from reference_service.cache.bloom import BloomShape  # type: ignore[import-not-found, unused-ignore]
    from reference_service.cache.readthrough import (  # type: ignore[import-not-found, unused-ignore]
        CachePolicy,
        ReadThrough,
    )

    # No jitter, so "expired" is exactly ttl after the load; a long stale window, so the
    # expired entry is still there to be served while one caller rebuilds.
    policy = CachePolicy(
        ttl_seconds=ttl_seconds, null_ttl_seconds=1.0, jitter=0.0, lease_ms=5000, stale_factor=20.0
    )
    cache = ReadThrough(client, "bench:", "product", policy, BloomShape.for_capacity(10_000, 0.01))

    class Adapter:
        async def get(self, key: str, load: Load) -> dict[str, Any] | None:
            value: dict[str, Any] | None = await cache.get(tenant_id, key, load)
            return value

        async def expire(self, key: str) -> None:
            # Its logical expiry passes; the entry itself stays for the stale window.
            await asyncio.sleep(ttl_seconds * 1.2)

    return Adapter()


def _load_statement(product_id: uuid.UUID, load_ms: float) -> Statement:
    one = repository.select_one("products", product_id)
    return Statement(
        sql.SQL("SELECT q.* FROM ({}) AS q CROSS JOIN LATERAL (SELECT pg_sleep(%s)) AS s").format(
            one.query
        ),
        (*one.params, load_ms / 1000),
    )


def _reads(monitor: psycopg.Connection[Any], dbname: str) -> int:
    row = monitor.execute(
        "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s"
        " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s AND s.query LIKE %s",
        (dbname, "%pg_sleep%"),
    ).fetchone()
    assert row is not None
    return int(row[0])


async def _stampede(
    cache: HotKeyCache, load: Load, key: str, n: int, expired: bool
) -> tuple[list[float], int]:
    if expired:
        await cache.get(key, load)  # the entry exists ...
    await cache.expire(key)  # ... and has just expired (or, cold: was never there)
    errors = 0

    async def one() -> float:
        nonlocal errors
        start = time.perf_counter()
        try:
            value = await cache.get(key, load)
        except Exception:
            errors += 1
            raise
        if value is None:
            raise RuntimeError("the hot product was not found")
        return (time.perf_counter() - start) * 1000

    times = await asyncio.gather(*(one() for _ in range(n)))
    return list(times), errors


async def _run(
    args: argparse.Namespace, pg: local_servers.Postgres, rd: local_servers.Redis
) -> str:
    scratch = service_setup.create(pg)
    service_setup.seed_products(scratch.admin_url, scratch.tenant_id, 100, "HOT-")
    with psycopg.connect(scratch.admin_url) as conn:
        row = conn.execute("SELECT id FROM public.products WHERE sku = 'HOT-1'").fetchone()
    assert row is not None
    product_id: uuid.UUID = row[0]
    monitor = psycopg.connect(pg.url(), autocommit=True)
    monitor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    settings = Settings(
        database_url=scratch.app_url,
        db_pool_min_size=10,
        db_pool_max_size=10,
        db_pool_acquire_timeout_seconds=60,
    )
    client = redis.asyncio.Redis(port=rd.port, max_connections=2000)
    statement = _load_statement(product_id, args.load_ms)
    # One open connection per concurrent reader beforehand, as a warm fleet has: otherwise the
    # first reader's load finishes while the others are still connecting, and hides the stampede.
    await asyncio.gather(*(client.ping() for _ in range(args.requests)))
    rows: list[list[str]] = []
    async with Database(settings, name="adbm-bench") as db:

        async def load() -> dict[str, Any] | None:
            found = await db.read(scratch.tenant_id, statement)
            # As JSON, the shape a cache stores (and the service's product cache loads).
            return (
                products.Product.model_validate(found[0]).model_dump(mode="json") if found else None
            )

        variants: list[tuple[str, HotKeyCache | None]] = [
            ("no cache", NoCache()),
            ("naive read-through (no defences)", NaiveReadThrough(client, args.ttl)),
            (
                "adbm ReadThrough (mutex, stale serving, XFetch)",
                service_cache(client, scratch.tenant_id, args.ttl),
            ),
        ]
        # Each variant reads another product once first: "cold" is the hot key, not Redis's
        # script cache (1,000 callers of a script Redis has not seen each load it again) nor
        # the pool's connections.
        for _name, cache in variants:
            if cache is not None:
                await cache.get(f"{product_id}-warm-up", load)
        for scenario in ("cold key", "key just expired"):
            for name, cache in variants:
                if cache is None:
                    rows.append(
                        [
                            scenario,
                            name,
                            "skipped: reference_service.cache is not on this branch",
                            "",
                            "",
                            "",
                            "",
                        ]
                    )
                    continue
                key = f"{product_id}-{scenario.replace(' ', '-')}"
                before = _reads(monitor, scratch.dbname)
                start = time.perf_counter()
                times, errors = await _stampede(
                    cache, load, key, args.requests, scenario != "cold key"
                )
                wall = time.perf_counter() - start
                reads = (
                    _reads(monitor, scratch.dbname) - before - (1 if scenario != "cold key" else 0)
                )
                ordered = sorted(times)
                rows.append(
                    [
                        scenario,
                        name,
                        f"{reads:,}",
                        f"{statistics.median(times):.1f}",
                        f"{ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]:.1f}",
                        f"{ordered[-1]:.1f}",
                        str(errors),
                    ]
                )
                print(f"{scenario}, {name}: {reads} reads in {wall:.1f} s", file=sys.stderr)
    await client.aclose()
    monitor.close()
    return (
        f"{args.requests:,} concurrent reads of one product; load = the product's SELECT with"
        f" pg_sleep({args.load_ms / 1000:g}), pool of 10 connections; cache TTL {args.ttl:g} s.\n\n"
        + results.table(
            ["scenario", "variant", "database reads", "p50 ms", "p99 ms", "max ms", "errors"], rows
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="concurrent reads of the key")
    parser.add_argument("--load-ms", type=float, default=20.0, help="cost of one database load")
    parser.add_argument("--ttl", type=float, default=1.0, help="cache TTL in seconds")
    parser.add_argument("--label", default="full run", help="how RESULTS.md labels this run")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.load_ms < 0 or args.ttl <= 0:
        parser.error("--requests >= 1, --load-ms >= 0, --ttl > 0")
    try:
        with local_servers.postgres() as pg, local_servers.redis() as rd:
            text = asyncio.run(_run(args, pg, rd))
    except local_servers.Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    if not args.no_record:
        results.record("Cache stampede (bench/cache.py)", args.label, text, ["redis", "psycopg"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
