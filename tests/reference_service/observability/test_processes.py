"""`adbm-service serve` and `adbm-service worker` as the pods run them, side by side: start-up,
an order placed through the API, the saga's messages consumed by the worker, SIGTERM. Every line
either process writes (standard output and standard error) is one JSON object of the schema;
the worker's lines for the messages the order caused carry the order request's trace id, across
the process boundary; both metrics ports answer a scrape that `promtool check metrics` accepts;
no secret reaches either output."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import uuid
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from reference_service.messaging import worker
from tests.reference_service import payment_provider
from tests.reference_service.conftest import APP_PASSWORD, DatabaseUrls
from tests.reference_service.http.conftest import Callers
from tests.reference_service.observability.test_process import EXECUTABLE, parse
from tests.reference_service.worker_support import (
    AMQP_URL,
    PUBLISHED_QUEUES,
    admin_rows,
    delete_queues,
    free_port,
    http_get,
    new_prefix,
    queue_names,
    settings_for,
    wait_ready,
)


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("ADBM_", "OTEL_"))}


async def start(args: list[str], env: dict[str, str], out: IO[bytes]) -> asyncio.subprocess.Process:
    # One file for both streams, so nothing either writes is missed (a pipe could also fill).
    return await asyncio.create_subprocess_exec(
        str(EXECUTABLE), *args, env=env, stdout=out, stderr=subprocess.STDOUT
    )


async def stop(process: asyncio.subprocess.Process) -> int:
    """SIGTERM, as the kubelet sends it; the exit code."""
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), timeout=60)


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/install-tools)")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", (
        result.stdout + result.stderr
    )


async def scrape(port: int) -> str:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return body.decode()


async def test_serve_and_worker_write_only_json_and_share_the_trace(
    database_urls: DatabaseUrls, callers: Callers, tmp_path: Path
) -> None:
    prefix = new_prefix()
    with payment_provider.serve() as (_, provider_url):
        settings = settings_for(
            database_urls.app_url, amqp_url=AMQP_URL, prefix=prefix, provider_url=provider_url
        )
        api_port, api_metrics_port = free_port(), free_port()
        serve_env = {
            **clean_environment(),
            "ADBM_DATABASE_URL": database_urls.app_url,
            "ADBM_HTTP_PORT": str(api_port),
            "ADBM_METRICS_PORT": str(api_metrics_port),
            "ADBM_CURSOR_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
            "ADBM_REDIS_KEY_PREFIX": f"test-{uuid.uuid4().hex}:",
            "ADBM_AMQP_URL": AMQP_URL,
            "ADBM_QUEUE_PREFIX": prefix,
            "ADBM_PAYMENT_PROVIDER_URL": provider_url,
            # Nothing sampled: the trace id still reaches the worker's lines.
            "ADBM_TRACE_SAMPLING_RATIO": "0",
        }
        worker_env = {
            **clean_environment(),
            "ADBM_DATABASE_URL": database_urls.app_url,
            "ADBM_METRICS_PORT": str(settings.metrics_port),
            "ADBM_AMQP_URL": AMQP_URL,
            "ADBM_QUEUE_PREFIX": prefix,
            "ADBM_PAYMENT_PROVIDER_URL": provider_url,
            "ADBM_RELAY_POLL_SECONDS": "0.05",
            "ADBM_TRACE_SAMPLING_RATIO": "0",
        }
        serve_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
        queues = ",".join(PUBLISHED_QUEUES)
        with serve_log.open("wb") as serve_out, worker_log.open("wb") as worker_out:
            serving = await start(["serve", "--host", "127.0.0.1"], serve_env, serve_out)
            working = await start(
                ["worker", "--queues", queues, "--prefetch", "8"], worker_env, worker_out
            )
        processes = [serving, working]
        try:
            await wait_ready(settings.metrics_port)
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{api_port}", headers=callers.a.headers, timeout=10
            ) as client:
                async with asyncio.timeout(30):
                    while True:
                        try:
                            if (await client.get("/health")).status_code == 200:
                                break
                        except httpx.TransportError:
                            pass
                        await asyncio.sleep(0.1)
                order = await place(client)
                async with asyncio.timeout(60):  # a guard against a hang, not a measurement
                    while (await client.get(f"/api/v1/orders/{order}")).json()[
                        "status"
                    ] != "CONFIRMED" or not await admin_rows(
                        database_urls.admin_url, "SELECT 1 FROM notifications"
                    ):
                        await asyncio.sleep(0.1)
            api_metrics = await scrape(api_metrics_port)
            worker_metrics = await scrape(settings.metrics_port)
            assert await stop(serving) == -signal.SIGTERM
            assert await stop(working) == 0
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await delete_queues(
                AMQP_URL, queue_names(prefix, PUBLISHED_QUEUES, worker.backoff(settings))
            )

    served = parse(serve_log.read_text().splitlines())
    worked = parse(worker_log.read_text().splitlines())

    # The worker from its first line to its last, aio-pika's and the relay's lines included.
    assert worked[0]["event"].startswith("worker consuming"), worked[0]
    assert worked[-1]["event"] == "worker stopped", worked[-1]
    # The order request's trace continues in the worker, in another process: through the
    # outbox row, the relay's message headers and the consumer, unsampled as it is.
    (request,) = [line for line in served if line.get("request_id") == "order-request"]
    handled = [line for line in worked if line["logger"] == "adbm.consume"]
    assert [(line["queue"], line["result"]) for line in handled] == [
        ("orders.place", "acked"),
        ("orders.place", "acked"),
        ("orders.place", "acked"),
        ("notifications.email", "acked"),
    ]
    assert {line["trace_id"] for line in handled} == {request["trace_id"]}

    # Redaction: neither the API key nor a password (the broker's, the database's) reaches any
    # line.
    key = callers.a.headers["Authorization"].removeprefix("Bearer ")
    for text in (serve_log.read_text(), worker_log.read_text()):
        assert key not in text and "guest:guest@" not in text
        assert APP_PASSWORD not in text

    # Both metrics ports: what an SRE's dashboards read, in a format Prometheus accepts.
    promtool_check(api_metrics)
    promtool_check(worker_metrics)
    assert 'adbm_messages_consumed_total{queue="orders.place",result="acked"} 3.0' in (
        worker_metrics
    )
    assert 'adbm_outbox_published_total{queue="orders.place"} 3.0' in worker_metrics
    assert 'adbm_saga_outcomes_total{saga="order_placement",state="confirmed"} 1.0' in (
        worker_metrics
    )
    assert 'adbm_db_pool_max_connections{pool="adbm-worker"}' in worker_metrics
    assert (
        'adbm_http_requests_total{method="POST",route="/api/v1/orders",status_class="2xx"} 1.0'
        in api_metrics
    )


async def place(client: httpx.AsyncClient) -> Any:
    account = await client.post(
        "/api/v1/accounts",
        json={"name": "a", "currency": "EUR", "balance_minor": 1_000},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    product = await client.post(
        "/api/v1/products",
        json={"sku": "s", "name": "p", "price_minor": 300, "currency": "EUR"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    accepted = await client.post(
        "/api/v1/orders",
        json={
            "account_id": account.json()["id"],
            "product_id": product.json()["id"],
            "quantity": 1,
        },
        headers={"Idempotency-Key": uuid.uuid4().hex, "X-Request-Id": "order-request"},
    )
    assert accepted.status_code == 202, accepted.text
    return accepted.json()["id"]


def test_a_worker_that_crashes_writes_its_traceback_as_json(database_urls: DatabaseUrls) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(EXECUTABLE), "worker", "--queues", "orders.place"],
            env={
                **clean_environment(),
                "ADBM_DATABASE_URL": database_urls.app_url,
                "ADBM_METRICS_PORT": str(port),  # taken: the probe listener cannot start
            },
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert result.stdout == b""
    (line,) = parse(result.stderr.decode().splitlines())
    assert line["level"] == "error" and line["logger"] == "adbm.worker"
    assert line["event"] == "adbm.worker crashed"
    assert "OSError" in line["exception"]
