"""Keyset cursor against OFFSET: the cost of one 50-row page of products at growing depth.

Both run through the service's own read path (`Database.read`: one pipeline of BEGIN READ
ONLY, the tenant setting, the query and COMMIT, as the app role under row-level security) on a
dedicated PostgreSQL holding one tenant's rows. The keyset page is `repository.select_page`
(the statement the list routes run, after the `(created_at, id)` a cursor carries); the OFFSET
page is the same statement from the start with `OFFSET depth`. Per depth: client-side median
and p99 over repeated reads, and the shared buffers the plan touched (EXPLAIN ANALYZE BUFFERS),
which is the work itself, independent of the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from bench import local_servers, results, service_setup
from reference_service.config import Settings
from reference_service.db import repository
from reference_service.db.pool import Database, Statement

PAGE = 50


def offset_page(depth: int) -> Statement:
    first = repository.select_page("products", after=None, limit=PAGE)
    return Statement(sql.SQL("{} OFFSET %s").format(first.query), (*first.params, depth))


def keyset_page(after: repository.Key) -> Statement:
    return repository.select_page("products", after=after, limit=PAGE)


async def _timed(
    db: Database, tenant: uuid.UUID, statement: Statement, budget: float, reps: int
) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < reps and (len(times) < 3 or time.perf_counter() < deadline):
        start = time.perf_counter()
        rows = await db.read(tenant, statement)
        times.append((time.perf_counter() - start) * 1000)
        if len(rows) != PAGE:
            raise RuntimeError(f"expected {PAGE} rows, got {len(rows)}")
    return times


def _buffers(
    app_url: str, setting: str, tenant: uuid.UUID, statement: Statement
) -> tuple[int, float]:
    """Shared buffers hit + read, and the server's execution time (ms), of one run."""
    with psycopg.connect(app_url) as conn:
        conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (setting, str(tenant)))
        explain = sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}").format(statement.query)
        row = conn.execute(explain, statement.params).fetchone()
    assert row is not None
    plan: dict[str, Any] = (row[0] if isinstance(row[0], list) else json.loads(row[0]))[0]
    top = plan["Plan"]
    return int(top["Shared Hit Blocks"]) + int(top["Shared Read Blocks"]), float(
        plan["Execution Time"]
    )


async def _measure(
    scratch: service_setup.Scratch, depths: list[int], args: argparse.Namespace
) -> list[list[str]]:
    settings = Settings(database_url=scratch.app_url, db_pool_min_size=1, db_pool_max_size=2)
    rows: list[list[str]] = []
    with psycopg.connect(scratch.admin_url) as conn:
        keys = {
            d: conn.execute(
                "SELECT created_at, id FROM public.products"
                " ORDER BY created_at, id OFFSET %s LIMIT 1",
                (d - 1,),
            ).fetchone()
            for d in depths
            if d > 0
        }
    async with Database(settings, name="adbm-bench") as db:
        for depth in depths:
            key = keys.get(depth)
            cases = [("OFFSET", offset_page(depth))]
            cases.append(
                (
                    "keyset",
                    keyset_page((key[0], key[1]))
                    if key
                    else repository.select_page("products", after=None, limit=PAGE),
                )
            )
            for name, statement in cases:
                await db.read(scratch.tenant_id, statement)  # warm
                times = await _timed(db, scratch.tenant_id, statement, args.budget, args.reps)
                blocks, server_ms = _buffers(
                    scratch.app_url, settings.db_tenant_setting, scratch.tenant_id, statement
                )
                rows.append(
                    [
                        f"{depth:,}",
                        name,
                        f"{statistics.median(times):.2f}",
                        f"{sorted(times)[min(len(times) - 1, int(0.99 * len(times)))]:.2f}",
                        str(len(times)),
                        f"{server_ms:.2f}",
                        f"{blocks:,}",
                    ]
                )
                print(f"depth {depth:,} {name}: {statistics.median(times):.2f} ms", file=sys.stderr)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[0, 10_000, 100_000, 1_000_000])
    parser.add_argument("--reps", type=int, default=30, help="reads per case at most")
    parser.add_argument(
        "--budget", type=float, default=3.0, help="seconds per case at most (3 reads at least)"
    )
    parser.add_argument("--label", default="full run", help="how RESULTS.md labels this run")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args(argv)
    if any(d < 0 for d in args.depths) or args.reps < 1 or args.budget <= 0:
        parser.error("depths must be >= 0, --reps >= 1, --budget > 0")
    depths = sorted(set(args.depths))
    try:
        with local_servers.postgres() as pg:
            scratch = service_setup.create(pg)
            start = time.perf_counter()
            service_setup.seed_products(
                scratch.admin_url, scratch.tenant_id, depths[-1] + PAGE, "P-"
            )
            seeded = time.perf_counter() - start
            print(f"{depths[-1] + PAGE:,} rows in {seeded:.1f} s", file=sys.stderr)
            rows = asyncio.run(_measure(scratch, depths, args))
    except local_servers.Unavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = (
        f"{depths[-1] + PAGE:,} products of one tenant (inserted in {seeded:.1f} s with one"
        f" INSERT ... SELECT generate_series), pages of {PAGE}, through `Database.read` as the app"
        " role (RLS on).\n\n"
        + results.table(
            [
                "rows before the page",
                "method",
                "median ms",
                "p99 ms",
                "reads",
                "server execution ms (EXPLAIN ANALYZE)",
                "shared buffers touched",
            ],
            rows,
        )
        + "\n"
    )
    print(text)
    if not args.no_record:
        results.record("Pagination (bench/pagination.py)", args.label, text, ["psycopg"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
