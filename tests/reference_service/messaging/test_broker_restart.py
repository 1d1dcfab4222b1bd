"""A dedicated RabbitMQ node, stopped while orders are in flight and started again: nothing is
lost, nothing is applied twice. The machine's own broker keeps running for the other tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reference_service.db.pool import Database
from reference_service.domain.sagas import order_placement
from reference_service.domain.sagas.order_placement import OrderPlace
from tests.reference_service import payment_provider
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.worker_support import (
    admin_rows,
    check_books,
    free_port,
    http_get,
    seed,
    settings_for,
    start_worker,
    wait_ready,
    wait_until_terminal,
)

# The Debian wrapper in /usr/sbin switches to the rabbitmq user, who cannot write this test's
# directories; the script it wraps runs the node as the current user.
SERVER = next(
    (p for p in ("/usr/lib/rabbitmq/bin/rabbitmq-server",) if os.access(p, os.X_OK)),
    shutil.which("rabbitmq-server"),
)

UNPUBLISHED = "SELECT count(*) AS n FROM outbox WHERE published_at IS NULL"


@dataclass
class Node:
    base: Path
    port: int
    dist_port: int
    name: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, limit_seconds: float = 120) -> float:
        """Start the node; returns how long it took to accept connections."""
        env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            # Its own config: the machine's sets a listener on 5672, which is taken.
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.base / "plugins"),
        }
        started = time.monotonic()
        with (self.base / "node.out").open("ab") as out:
            # A session of its own: the node is stopped by signalling its process group.
            self.process = subprocess.Popen(
                [str(SERVER)], env=env, stdout=out, stderr=out, start_new_session=True
            )
        while True:
            try:
                with socket_to(self.port):
                    return time.monotonic() - started
            except OSError:
                if self.process.poll() is not None or time.monotonic() - started > limit_seconds:
                    self.stop()
                    output = (self.base / "node.out").read_text()[-2000:]
                    pytest.fail(f"RabbitMQ node did not start: {output}")
                time.sleep(0.25)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


def socket_to(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=1)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    if SERVER is None:
        pytest.skip("rabbitmq-server is not installed")
    base = tmp_path / "rabbitmq"
    base.mkdir()
    port = free_port()
    (base / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{port}\n")
    (base / "enabled_plugins").write_text("[].\n")
    node = Node(base, port, free_port(), f"adbm-test-{uuid.uuid4().hex[:8]}@localhost")
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def provider() -> Iterator[tuple[payment_provider.Provider, str]]:
    with payment_provider.serve(slow_seconds=1.0) as served:
        yield served


async def place_many(
    database: Database, tenant: uuid.UUID, accounts: list[uuid.UUID], product: uuid.UUID, n: int
) -> None:
    await asyncio.gather(
        *(
            order_placement.place_order(
                database,
                tenant,
                OrderPlace(account_id=accounts[i % len(accounts)], product_id=product, quantity=1),
                actor="test",
                deadline_seconds=600,
            )
            for i in range(n)
        )
    )


async def test_a_broker_restart_mid_flight_loses_nothing_and_applies_nothing_twice(
    node: Node,
    database_urls: DatabaseUrls,
    database: Database,
    tenants: Tenants,
    provider: tuple[payment_provider.Provider, str],
    tmp_path: Path,
) -> None:
    first_start = await asyncio.to_thread(node.start)
    settings = settings_for(
        database_urls.app_url, amqp_url=node.url, prefix="", provider_url=provider[1]
    )
    shop = await seed(database, tenants.a, balances=[5_000] * 5, prices=[100, 101, 102])
    await place_many(database, tenants.a, shop.accounts, shop.products[100], 30)
    await place_many(database, tenants.a, shop.accounts, shop.products[101], 10)
    # Too slow for the client's timeout: retried through the delay queues for a while, so
    # some are surely in flight (held, or waiting in a delay queue) when the broker stops.
    await place_many(database, tenants.a, shop.accounts, shop.products[102], 10)
    worker = await start_worker(settings, tmp_path / "worker.log")
    try:
        await wait_ready(settings.metrics_port)
        admin = database_urls.admin_url
        async with asyncio.timeout(60):  # mid-flight: some sagas done, not all
            while (
                await admin_rows(
                    admin,
                    "SELECT count(*) AS n FROM sagas WHERE state IN ('CONFIRMED', 'CANCELLED')",
                )
            )[0]["n"] < 5:
                await asyncio.sleep(0.05)
        await asyncio.to_thread(node.stop)
        # While the broker is down: orders are still accepted (the outbox holds their
        # messages), and the worker says it is not ready.
        await place_many(database, tenants.a, shop.accounts, shop.products[100], 10)
        async with asyncio.timeout(30):
            while (await http_get(settings.metrics_port, "/ready"))[0] != 503:
                await asyncio.sleep(0.1)
        restart = await asyncio.to_thread(node.start)
        await wait_ready(settings.metrics_port)
        await wait_until_terminal(admin, 60, limit_seconds=120)
        # A terminal saga's last message (its notification) may still be in the outbox: the
        # relay publishes it within its poll interval; nothing is lost if it never does before
        # shutdown (the next relay would), but this test's books close once it is published.
        async with asyncio.timeout(30):
            while (await admin_rows(admin, UNPUBLISHED))[0]["n"]:
                await asyncio.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.wait(), timeout=60) == 0
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    print(f"dedicated RabbitMQ node: first start {first_start:.1f}s, restart {restart:.1f}s")
    ends = await check_books(admin, provider[0], dict.fromkeys(shop.accounts, 5_000))
    assert ends == {"CONFIRMED": 40, "CANCELLED": 20}
    unpublished = await admin_rows(admin, UNPUBLISHED)
    assert unpublished[0]["n"] == 0
    # Each step's outcome is recorded once per saga, and each applied message once.
    steps = await admin_rows(admin, "SELECT count(*) AS n FROM saga_steps")
    assert steps[0]["n"] == 40 * 3 + 20 * 5
