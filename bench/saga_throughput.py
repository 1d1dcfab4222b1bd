"""How fast orders go through the saga: the outbox relay and the workers, as real processes.

    python bench/saga_throughput.py [--orders 1000] [--workers 1 2] [--prefetch 32]

For each worker count: a fresh scratch database (migrated, one tenant, accounts that can pay for
everything), `--orders` orders placed at once through `place_order` (each the order, its saga and
its outbox row in one transaction), then `--workers` `adbm-service worker` processes started on
the machine's RabbitMQ with queues of their own, and the wall time measured until every saga is
CONFIRMED. The payment provider is the tests' HTTP server (every charge succeeds at once), in
this process. Each order is 3 steps, so 3 messages consumed and 3 published through the outbox
(the first at placement).

Prints one table row per worker count; exits non-zero only for a broken run (a saga not
CONFIRMED before the timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference_service.db.admin import create_tenant
from reference_service.db.migrate import migrate
from reference_service.db.pool import Database
from reference_service.domain.sagas import order_placement
from reference_service.messaging import worker
from tests.reference_service import payment_provider
from tests.reference_service.conftest import (
    APP_PASSWORD,
    conninfo,
    create_scratch_database,
    drop_scratch,
)
from tests.reference_service.worker_support import (
    AMQP_URL,
    PUBLISHED_QUEUES,
    admin_rows,
    delete_queues,
    new_prefix,
    queue_names,
    seed,
    settings_for,
    start_worker,
    wait_until_terminal,
)


async def one_run(orders: int, workers: int, prefetch: int, logs: Path) -> dict[str, float]:
    suffix = uuid.uuid4().hex
    name, role = f"adbm_bench_{suffix}", f"adbm_app_{suffix}"
    await create_scratch_database(name)
    try:
        admin = conninfo(name)
        await migrate(admin, app_role=role, app_password=APP_PASSWORD)
        app_url = conninfo(name, user=role, password=APP_PASSWORD)
        tenant = await create_tenant(admin, "bench", actor="bench")
        with payment_provider.serve() as (_, provider_url):
            settings = settings_for(
                app_url,
                amqp_url=AMQP_URL,
                prefix=new_prefix(),
                provider_url=provider_url,
                payment_timeout_seconds=5.0,
                db_pool_max_size=8,
            )
            database = Database(settings)
            await database.open()
            try:
                shop = await seed(database, tenant, balances=[10**12] * 20, prices=[100])
                gate = asyncio.Semaphore(8)  # as many placements at once as connections

                async def place(i: int) -> None:
                    async with gate:
                        await order_placement.place_order(
                            database,
                            tenant,
                            order_placement.OrderPlace(
                                account_id=shop.accounts[i % 20],
                                product_id=shop.products[100],
                                quantity=1,
                            ),
                            actor="bench",
                            deadline_seconds=3600,
                        )

                started = time.monotonic()
                await asyncio.gather(*(place(i) for i in range(orders)))
                placed = time.monotonic() - started
            finally:
                await database.close()
            processes = []
            for i in range(workers):
                copy = settings.model_copy(update={"metrics_port": settings.metrics_port + i})
                processes.append(
                    await start_worker(copy, logs / f"w{workers}-{i}.log", prefetch=prefetch)
                )
            started = time.monotonic()
            try:
                await wait_until_terminal(admin, orders, limit_seconds=900)
                drained = time.monotonic() - started
            finally:
                for process in processes:
                    process.terminate()
                for process in processes:
                    await process.wait()
                await delete_queues(
                    AMQP_URL,
                    queue_names(settings.queue_prefix, PUBLISHED_QUEUES, worker.backoff(settings)),
                )
            confirmed = await admin_rows(
                admin, "SELECT count(*) AS n FROM sagas WHERE state = 'CONFIRMED'"
            )
            if confirmed[0]["n"] != orders:
                raise SystemExit(f"only {confirmed[0]['n']} of {orders} sagas confirmed")
        return {"placed_per_s": orders / placed, "drain_s": drained, "per_s": orders / drained}
    finally:
        await drop_scratch(name, [role])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--prefetch", type=int, default=32)
    parser.add_argument("--logs", type=Path, default=Path("/tmp"))
    args = parser.parse_args()
    header = ["orders", "workers", "prefetch", "placed/s", "all confirmed after (s)"]
    print("| " + " | ".join([*header, "orders/s", "messages/s"]) + " |")
    print("|---|---|---|---|---|---|---|")
    for workers in args.workers:
        r = await one_run(args.orders, workers, args.prefetch, args.logs)
        print(
            f"| {args.orders} | {workers} | {args.prefetch} | {r['placed_per_s']:.0f} |"
            f" {r['drain_s']:.1f} | {r['per_s']:.0f} | {3 * r['per_s']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
