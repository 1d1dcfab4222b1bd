"""The outbox relay: publishes outbox rows to RabbitMQ, then marks them published.

One pass, in one database transaction: claim a batch (`FOR UPDATE SKIP LOCKED`, so several
relays, one per worker replica, take disjoint batches and never wait on each other), publish
every message persistent and mandatory with publisher confirms, and mark the confirmed ones
published. A crash or a broker failure before the commit leaves the rows unpublished and their
locks released, and the next pass sends them again: delivery is at least once, and consumers
deduplicate on the message id (the row id) in their inbox.

Each message is published in a PRODUCER span, child of the span that wrote its row (the row's
`traceparent`), and carries that span's context in its headers: the consumer's span is its
child, so a request, its messages and every saga step they drive are one trace.

The relay runs inside every worker process (see README, "Workers and the outbox"): there is one
less Deployment to render, and relays scale with the workers that drain what they publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from opentelemetry import trace

from reference_service.db.pool import Database
from reference_service.messaging import outbox, topology
from reference_service.messaging.envelope import Envelope
from reference_service.observability import metrics, tracing

log = logging.getLogger(__name__)


class Relay:
    def __init__(
        self,
        database: Database,
        connection: AbstractConnection,
        *,
        prefix: str,
        backoff: topology.Backoff,
        batch_size: int,
        poll_seconds: float,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._database = database
        self._tracer = tracer or tracing.tracer()
        self._connection = connection
        self._prefix = prefix
        self._backoff = backoff
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._channel: AbstractChannel | None = None
        self._declared: set[str] = set()
        self.published_total = 0

    async def _ready_channel(self) -> AbstractChannel:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self._connection.channel(publisher_confirms=True)
            self._declared.clear()
        return self._channel

    async def publish_batch(self) -> int:
        """One pass: how many messages were published and marked."""
        async with self._database.transaction(None) as conn:
            pending = await outbox.claim(conn, self._batch_size)
            metrics.OUTBOX_LAG_SECONDS.set(max((p.age_seconds for p in pending), default=0.0))
            if not pending:
                return 0
            channel = await self._ready_channel()
            for topic in {p.topic for p in pending} - self._declared:
                await topology.declare(
                    channel, topology.queue_name(self._prefix, topic), self._backoff
                )
                self._declared.add(topic)
            # All in flight at once, each awaited for its confirm: a nack, a return
            # (unroutable) or a lost connection raises, and the whole batch stays pending.
            await asyncio.gather(*(self._publish(channel, p) for p in pending))
            ids: list[uuid.UUID] = [p.id for p in pending]
            marked = await outbox.mark_published(conn, ids)
        # Counted once committed: a pass that fails after the confirms publishes them again.
        for topic in (p.topic for p in pending):
            metrics.OUTBOX_PUBLISHED.labels(topic).inc()
        self.published_total += marked
        return marked

    async def _publish(self, channel: AbstractChannel, pending: outbox.Pending) -> None:
        queue = topology.queue_name(self._prefix, pending.topic)
        with (
            structlog.contextvars.bound_contextvars(
                queue=pending.topic, message_id=str(pending.id)
            ),
            self._tracer.start_as_current_span(
                f"publish {pending.topic}",
                context=tracing.context_from(pending.trace_context),
                kind=trace.SpanKind.PRODUCER,
                attributes={
                    "messaging.system": "rabbitmq",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": queue,
                    "messaging.message.id": str(pending.id),
                },
            ),
        ):
            envelope = Envelope(pending.id, pending.tenant_id, pending.topic, pending.payload)
            await channel.default_exchange.publish(
                envelope.to_message(tracing.trace_headers()),
                routing_key=queue,
                mandatory=True,
                timeout=topology.PUBLISH_TIMEOUT_SECONDS,
            )
            log.debug("published")

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set: at once again after a full batch, after the poll
        interval otherwise, and with a growing pause (up to 10 s) while something fails."""
        tracing.use_tracer(self._tracer)
        failures = 0
        while not stop.is_set():
            try:
                sent = await self.publish_batch()
                failures = 0
            except (aio_pika.exceptions.AMQPError, ConnectionError, OSError) as exc:
                failures += 1
                log.warning("outbox relay: publishing failed (%s); retrying", exc)
                sent = 0
            except Exception:  # a database outage, or a bug: keep the relay alive
                failures += 1
                log.exception("outbox relay: pass failed; retrying")
                sent = 0
            if sent >= self._batch_size:
                continue
            pause = self._poll_seconds if failures == 0 else min(10.0, 0.2 * 2**failures)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
