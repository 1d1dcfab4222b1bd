"""`adbm-service worker`: consume queues, relay the outbox, sweep stuck sagas, serve probes.

The process that relays also prunes the outbox and the inbox past their retention
(`retention`): both are cross-tenant housekeeping of the same tables.

Start-up never fails on an unreachable broker or database: the process serves `/health` at
once and keeps connecting, and `/ready` says what is missing until both answer (the pod's
startup probe allows a minute). SIGTERM (or SIGINT) stops consuming, gives in-flight messages
`worker_shutdown_grace_seconds` to finish and be acked, and exits 0; anything unfinished is
requeued by the broker when the connection closes.

Observability as for the API: JSON log lines (configured by the CLI before anything writes),
the metrics on `/metrics` of the probe port (`ADBM_METRICS_PORT`), and spans exported over OTLP
as `tracing.provider` says, flushed at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from opentelemetry.sdk.trace import TracerProvider

from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.domain import notifications
from reference_service.domain.sagas import order_placement
from reference_service.domain.sagas.payments import PaymentProvider
from reference_service.messaging import topology
from reference_service.messaging.consumer import Consumer, Handler
from reference_service.messaging.health import HealthServer, ReadinessCheck
from reference_service.messaging.relay import Relay
from reference_service.messaging.retention import Pruner
from reference_service.observability import metrics, tracing

log = logging.getLogger(__name__)


class UnknownQueue(ValueError):
    pass


def known_queues() -> tuple[str, ...]:
    return (order_placement.PLACE_QUEUE, order_placement.COMPENSATE_QUEUE, notifications.QUEUE)


def check_queues(queues: Sequence[str]) -> list[str]:
    """The queues, deduplicated; UnknownQueue when one has no handler in this service."""
    wanted = list(dict.fromkeys(q.strip() for q in queues if q.strip()))
    if not wanted:
        raise UnknownQueue("no queue given")
    unknown = [q for q in wanted if q not in known_queues()]
    if unknown:
        raise UnknownQueue(
            f"no handler for queue(s) {', '.join(unknown)}; this service handles"
            f" {', '.join(known_queues())}"
        )
    return wanted


def backoff(settings: Settings) -> topology.Backoff:
    return topology.Backoff(settings.worker_max_attempts, settings.worker_retry_base_seconds)


async def connect(settings: Settings, stop: asyncio.Event) -> AbstractRobustConnection | None:
    """A robust connection (it reconnects, restoring channels and consumers, after a broker
    restart), retried until it succeeds or `stop` is set."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await aio_pika.connect_robust(
                settings.amqp_url.get_secret_value(), reconnect_interval=1.0
            )
        except (aio_pika.exceptions.AMQPError, ConnectionError, OSError) as exc:
            log.warning("RabbitMQ unreachable (%s); retrying in %.1fs", exc, delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(delay * 2, 10.0)
    return None


def pruner(database: Database, settings: Settings) -> Pruner:
    return Pruner(
        database,
        outbox_retention_seconds=settings.outbox_retention_seconds,
        inbox_retention_seconds=settings.inbox_retention_seconds,
    )


def readiness(
    database: Database, connection: Callable[[], AbstractRobustConnection | None]
) -> ReadinessCheck:
    """Ready when the broker connection is up and the database answers a query."""

    async def check() -> dict[str, str]:
        problems: dict[str, str] = {}
        current = connection()
        # `connected` is cleared while a robust connection is re-establishing itself, when
        # `is_closed` is still false.
        if current is None or current.is_closed or not current.connected.is_set():
            problems["rabbitmq"] = "not connected"
        try:
            await asyncio.wait_for(database.ping(), timeout=1.5)
        except Exception as exc:
            problems["postgres"] = f"{type(exc).__name__}: {exc}".strip()[:200]
        return problems

    return check


async def _periodic(
    stop: asyncio.Event, interval: float, name: str, job: Callable[[], Awaitable[object]]
) -> None:
    while not stop.is_set():
        try:
            await job()
        except Exception:
            log.exception("%s failed; trying again in %gs", name, interval)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


async def run(
    settings: Settings,
    queues: Sequence[str],
    *,
    prefetch: int,
    relay: bool = True,
    stop: asyncio.Event | None = None,
    tracer_provider: TracerProvider | None = None,
) -> None:
    """Consume `queues` (and relay the outbox) until SIGTERM, SIGINT or `stop`.
    `tracer_provider` replaces the one built from the settings (a test's in-memory exporter)."""
    queues = check_queues(queues)
    provider = tracer_provider or tracing.provider(settings)
    tracer = provider.get_tracer("reference_service")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    database = Database(settings, name="adbm-worker")
    metrics.POOLS.watch(database)
    connection: AbstractRobustConnection | None = None
    health = HealthServer(
        readiness(database, lambda: connection), host="0.0.0.0", port=settings.metrics_port
    )
    # First, before anything that would need closing: a taken port fails the start-up here
    # (the pool's connecting tasks, cancelled by asyncio.run, would otherwise hang the exit).
    await health.start()
    await database.open(wait=False)
    payments = PaymentProvider(
        settings.payment_provider_url,
        connect_timeout=settings.payment_connect_timeout_seconds,
        timeout=settings.payment_timeout_seconds,
    )
    tasks: list[asyncio.Task[None]] = []
    consumer: Consumer | None = None
    try:
        connection = await connect(settings, stop)
        if connection is None:
            return
        saga = order_placement.OrderSaga(database, payments)
        all_handlers: dict[str, Handler] = {
            **saga.handlers(),
            **notifications.OrderNotifications(database).handlers(),
        }
        consumer = Consumer(
            connection,
            {q: all_handlers[q] for q in queues},
            prefix=settings.queue_prefix,
            prefetch=prefetch,
            backoff=backoff(settings),
            tracer=tracer,
        )
        await consumer.start()
        if relay:
            outbox_relay = Relay(
                database,
                connection,
                prefix=settings.queue_prefix,
                backoff=backoff(settings),
                batch_size=settings.relay_batch_size,
                poll_seconds=settings.relay_poll_seconds,
                tracer=tracer,
            )
            tasks.append(asyncio.create_task(outbox_relay.run(stop)))
            prune = pruner(database, settings).run(stop, settings.prune_interval_seconds)
            tasks.append(asyncio.create_task(prune))
        if order_placement.PLACE_QUEUE in queues:

            async def sweep() -> None:
                await order_placement.sweep(
                    database, stale_after_seconds=settings.saga_step_timeout_seconds
                )

            tasks.append(
                asyncio.create_task(
                    _periodic(stop, settings.saga_sweep_interval_seconds, "saga sweep", sweep)
                )
            )
        log.info("worker consuming %s (prefetch %d)", ", ".join(queues), prefetch)
        await stop.wait()
        log.info("stopping: no new messages; finishing the ones in flight")
    finally:
        stop.set()
        if consumer is not None:
            await consumer.stop(settings.worker_shutdown_grace_seconds)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if connection is not None:
            await connection.close()
        await payments.aclose()
        await database.close()
        await health.close()
        # Export what is still buffered; a provider the caller passed is the caller's.
        if tracer_provider is None:
            provider.shutdown()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    log.info("worker stopped")


async def run_relay(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Only the outbox relay, for a deployment that runs it apart from the workers."""
    provider = tracing.provider(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    database = Database(settings, name="adbm-relay")
    metrics.POOLS.watch(database)
    connection: AbstractRobustConnection | None = None
    health = HealthServer(
        readiness(database, lambda: connection), host="0.0.0.0", port=settings.metrics_port
    )
    await health.start()  # first, as in `run`
    await database.open(wait=False)
    try:
        connection = await connect(settings, stop)
        if connection is not None:
            relay = Relay(
                database,
                connection,
                prefix=settings.queue_prefix,
                backoff=backoff(settings),
                batch_size=settings.relay_batch_size,
                poll_seconds=settings.relay_poll_seconds,
                tracer=provider.get_tracer("reference_service"),
            )
            await asyncio.gather(
                relay.run(stop),
                pruner(database, settings).run(stop, settings.prune_interval_seconds),
            )
    finally:
        if connection is not None:
            await connection.close()
        await database.close()
        await health.close()
        provider.shutdown()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
