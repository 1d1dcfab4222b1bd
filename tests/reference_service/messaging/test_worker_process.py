"""`adbm-service worker` run as a process, exactly as the operator renders the worker pod."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import aio_pika
import pytest
import yaml

from adbm_operator import model
from adbm_operator.specs import configmap
from adbm_operator.specs import worker as worker_spec
from reference_service.db.pool import Database
from reference_service.messaging import outbox, topology, worker
from tests.reference_service.conftest import DatabaseUrls, Tenants
from tests.reference_service.worker_support import (
    AMQP_URL,
    PUBLISHED_QUEUES,
    admin_rows,
    delete_queues,
    environment,
    free_port,
    http_get,
    new_prefix,
    queue_names,
    service_command,
    settings_for,
    wait_ready,
)

EXAMPLES = Path(__file__).parents[3] / "examples"


def rendered_workers() -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """Every worker group of every example: its id, its worker container, its ConfigMap data."""
    rendered = []
    for example in sorted(EXAMPLES.glob("*.yaml")):
        obj = model.parse(yaml.safe_load(example.read_text()))
        for group in obj.spec.queue.workers if obj.spec.queue is not None else []:
            deployment = worker_spec.deployment(obj, group)
            container = deployment["spec"]["template"]["spec"]["containers"][0]
            rendered.append((f"{example.stem}:{group.name}", container, configmap.settings(obj)))
    return rendered


WORKERS = rendered_workers()


def test_the_examples_render_the_worker_groups_this_test_runs() -> None:
    assert [name for name, _, _ in WORKERS] == ["full:orders", "full:notifications"]
    args = {name: container["args"] for name, container, _ in WORKERS}
    assert args["full:orders"] == [
        "worker",
        "--queues=orders.place,orders.compensate",
        "--prefetch",
        "32",
    ]
    assert args["full:notifications"] == [
        "worker",
        "--queues=notifications.email",
        "--prefetch",
        "8",
    ]


def probe_port(container: dict[str, Any], probe: str) -> int:
    named = container[probe]["httpGet"]["port"]
    return next(p["containerPort"] for p in container["ports"] if p["name"] == named)


@pytest.mark.parametrize(("name", "container", "config"), WORKERS, ids=[w[0] for w in WORKERS])
async def test_the_rendered_worker_runs_and_passes_its_own_probes(
    name: str,
    container: dict[str, Any],
    config: dict[str, str],
    database_urls: DatabaseUrls,
    tmp_path: Path,
) -> None:
    assert container["args"][0] == "worker" and container["args"][1].startswith("--queues=")
    # The probes point at the port the service listens on: the one ADBM_METRICS_PORT names.
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe_port(container, probe) == int(config["ADBM_METRICS_PORT"])

    port = free_port()  # the rendered 9090 may be in use on a shared machine
    prefix = new_prefix()
    env = {
        **config,
        # What the pod gets from its Secrets, and the port and queue isolation of this test.
        "ADBM_DATABASE_URL": database_urls.app_url,
        "ADBM_AMQP_URL": AMQP_URL,
        "ADBM_METRICS_PORT": str(port),
        "ADBM_QUEUE_PREFIX": prefix,
        "OTEL_TRACES_EXPORTER": "none",
        "PATH": str(Path(service_command()).parent),
        # Not configuration: which code this environment's interpreter imports, when the
        # tree under test is put first that way rather than installed.
        **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
    }
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            service_command(),
            *container["args"],
            env=env,
            stderr=err,
            stdout=asyncio.subprocess.DEVNULL,
        )
    try:
        await wait_ready(port)
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            status, body = await http_get(port, container[probe]["httpGet"]["path"])
            assert status == 200, body
        status, body = await http_get(port, "/metrics")
        assert status == 200 and b"adbm_messages_consumed_total" in body
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        settings = settings_for(
            database_urls.app_url, amqp_url=AMQP_URL, prefix=prefix, provider_url="http://x"
        )
        names = queue_names(prefix, PUBLISHED_QUEUES, worker.backoff(settings))
        await delete_queues(AMQP_URL, names)
    assert code == 0, log.read_text()


async def test_ready_names_what_is_down_while_health_stays_up(tmp_path: Path) -> None:
    port = free_port()
    settings = settings_for(
        # Nothing listens on these ports.
        f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
        prefix=new_prefix(),
        provider_url="http://127.0.0.1:1",
        metrics_port=port,
        db_pool_acquire_timeout_seconds=0.5,
    )
    from tests.reference_service.worker_support import start_worker

    process = await start_worker(settings, tmp_path / "worker.log")
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    status, _ = await http_get(port, "/health")
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        assert status == 200
        status, body = await http_get(port, "/ready")
        assert status == 503
        assert b"rabbitmq" in body and b"postgres" in body
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_a_queue_without_a_handler_is_a_one_line_error() -> None:
    result = subprocess.run(
        [service_command(), "worker", "--queues", "orders.place,reports.daily"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --queues: no handler for queue(s) reports.daily; this service handles"
        " orders.place, orders.compensate, notifications.email"
    ]


def test_a_bad_prefetch_is_refused() -> None:
    result = subprocess.run(
        [service_command(), "worker", "--queues", "orders.place", "--prefetch", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "--prefetch: must be between 1 and 65535" in result.stderr


async def test_the_standalone_relay_publishes_the_outbox(
    database_urls: DatabaseUrls, database: Database, tenants: Tenants, tmp_path: Path
) -> None:
    settings = settings_for(
        database_urls.app_url, amqp_url=AMQP_URL, prefix=new_prefix(), provider_url="http://x"
    )
    async with database.transaction(tenants.a) as conn:
        message_id = await outbox.enqueue(conn, tenants.a, "orders.place", {"n": 1}, actor="t")
    with (tmp_path / "relay.log").open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            service_command(),
            "relay",
            env=environment(settings),
            stderr=err,
            stdout=asyncio.subprocess.DEVNULL,
        )
    try:
        await wait_ready(settings.metrics_port)
        connection = await aio_pika.connect(AMQP_URL)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                topology.queue_name(settings.queue_prefix, "orders.place"), durable=True
            )
            async with asyncio.timeout(30):  # a hang guard
                while (message := await queue.get(no_ack=True, fail=False)) is None:
                    await asyncio.sleep(0.05)
        assert message.message_id == str(message_id)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await delete_queues(
            AMQP_URL, queue_names(settings.queue_prefix, PUBLISHED_QUEUES, worker.backoff(settings))
        )
    rows = await admin_rows(database_urls.admin_url, "SELECT published_at FROM outbox")
    assert rows[0]["published_at"] is not None
