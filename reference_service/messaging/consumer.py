"""Consuming: manual acks, bounded prefetch, retries through delay queues, a dead-letter queue.

Each delivery is handled in its own task (at most `prefetch` at once: the broker sends no more
unacked messages than that) and acknowledged only after its handler returned, so a worker that
dies with messages in hand loses none: the broker redelivers them. The handler makes its effect
idempotent (the inbox, conditional state changes), so a redelivery after a committed effect is
harmless.

A handler that raises is retried: the message is republished (with confirms) to the delay queue
of its attempt, then acked; after `max_attempts` deliveries it is published to `<queue>.dead`
instead. A message that cannot be read at all goes to the dead-letter queue at once.

Shutdown (`stop`): the consumers are cancelled (no new deliveries), in-flight handlers get the
grace period to finish and ack; any still running after it are cancelled and their messages,
never acked, are requeued by the broker when the channel closes.

Each delivery is handled in a CONSUMER span, child of the span that published it (the
message's `traceparent`), with its queue and message id bound to every log line written while
it is handled; one `message` line per delivery says how it ended, and
`adbm_messages_consumed_total` counts it by queue and result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from opentelemetry import trace

from reference_service.messaging import topology
from reference_service.messaging.envelope import (
    ATTEMPT_HEADER,
    Envelope,
    MalformedMessage,
    from_message,
)
from reference_service.messaging.faults import crash_point
from reference_service.observability import metrics, tracing
from reference_service.observability.logging import get_logger

log = logging.getLogger(__name__)
# The line per delivery, as the access line is per request.
message_log = get_logger("adbm.consume")


@dataclass
class _Handling:
    duplicate: bool = False


# The delivery the current task handles, so the inbox can say it was applied before.
_HANDLING: ContextVar[_Handling | None] = ContextVar("adbm_handling", default=None)


def note_duplicate() -> None:
    """Called by the inbox when the message being handled was applied before: the delivery is
    then counted as a duplicate, not as applied."""
    handling = _HANDLING.get()
    if handling is not None:
        handling.duplicate = True


@dataclass(frozen=True)
class Delivery:
    envelope: Envelope
    queue: str
    """The logical queue the message came from, which is also the inbox's consumer name."""
    final: bool
    """True on the last attempt: if the handler raises now, the message is dead-lettered."""


class Retry(Exception):
    """Raised by a handler for an expected transient failure: retry after the backoff."""


Handler = Callable[[Delivery], Awaitable[None]]


class Consumer:
    def __init__(
        self,
        connection: AbstractConnection,
        handlers: Mapping[str, Handler],
        *,
        prefix: str,
        prefetch: int,
        backoff: topology.Backoff,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._connection = connection
        self._tracer = tracer or tracing.tracer()
        self._handlers = dict(handlers)
        self._prefix = prefix
        self._prefetch = prefetch
        self._backoff = backoff
        self._channel: AbstractChannel | None = None
        self._publisher: AbstractChannel | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._inflight: set[asyncio.Task[object]] = set()

    async def start(self) -> None:
        self._channel = await self._connection.channel()
        await self._channel.set_qos(prefetch_count=self._prefetch)
        # Retries and dead letters are published on a channel of their own with confirms, so a
        # message is acked only once its next copy is safely in the broker.
        self._publisher = await self._connection.channel(publisher_confirms=True)
        for logical in self._handlers:
            name = topology.queue_name(self._prefix, logical)
            await topology.declare(self._channel, name, self._backoff)
            queue = await self._channel.get_queue(name, ensure=True)

            async def on_message(message: AbstractIncomingMessage, logical: str = logical) -> None:
                # aiormq runs each delivery's callback in a task of its own.
                task = asyncio.current_task()
                assert task is not None
                self._inflight.add(task)
                try:
                    await self._process(logical, message)
                finally:
                    self._inflight.discard(task)

            tag = await queue.consume(on_message)
            self._consumers.append((queue, tag))

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def stop(self, grace_seconds: float) -> None:
        for queue, tag in self._consumers:
            try:
                await queue.cancel(tag)
            except Exception as exc:  # the channel may be gone already; then nothing comes
                log.info("cancelling consumer %s failed: %s", tag, exc)
        self._consumers.clear()
        if self._inflight:
            log.info("waiting up to %gs for %d in-flight message(s)", grace_seconds, self.in_flight)
            _, pending = await asyncio.wait(set(self._inflight), timeout=grace_seconds)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d message(s) unfinished at the deadline: requeued", len(pending))
                await asyncio.wait(pending)
        for channel in (self._channel, self._publisher):
            if channel is not None and not channel.is_closed:
                await channel.close()

    async def _process(self, logical: str, message: AbstractIncomingMessage) -> None:
        began = time.perf_counter()
        # Each delivery runs in a task of its own (aiormq's): these bindings end with it.
        tracing.use_tracer(self._tracer)
        handling = _Handling()
        _HANDLING.set(handling)
        result = "requeued"
        attempt = (message.headers or {}).get(ATTEMPT_HEADER)
        with (
            structlog.contextvars.bound_contextvars(queue=logical, message_id=message.message_id),
            self._tracer.start_as_current_span(
                f"process {logical}",
                context=tracing.context_from(message.headers or {}),
                kind=trace.SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "rabbitmq",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": self._name(logical),
                    "messaging.message.id": message.message_id or "",
                },
            ) as span,
        ):
            try:
                result = await self._handle(logical, message, handling)
            finally:
                span.set_attribute("adbm.message.result", result)
                metrics.MESSAGES_CONSUMED.labels(logical, result).inc()
                message_log.info(
                    "message",
                    result=result,
                    attempt=attempt if isinstance(attempt, int) else None,
                    duration_ms=round((time.perf_counter() - began) * 1000, 3),
                )
        if result in ("acked", "duplicate"):
            crash_point(f"after_ack:{logical}")

    async def _handle(
        self, logical: str, message: AbstractIncomingMessage, handling: _Handling
    ) -> str:
        """Handle and settle one delivery; its result (a label of MESSAGES_CONSUMED)."""
        try:
            envelope = from_message(message)
        except MalformedMessage as exc:
            log.error("unreadable message on %s (%s): dead-lettered", logical, exc)
            await self._publish_raw_dead(logical, message, str(exc))
            return await self._ack(message, logical, "dead_lettered")
        delivery = Delivery(envelope, logical, final=envelope.attempt >= self._backoff.max_attempts)
        try:
            await self._handlers[logical](delivery)
        except asyncio.CancelledError:
            raise  # shutdown past the grace period: never acked, so the broker requeues it
        except Exception as exc:
            if delivery.final:
                log.error(
                    "message %s on %s failed on attempt %d (%s): dead-lettered",
                    envelope.message_id,
                    logical,
                    envelope.attempt,
                    exc,
                )
                await self._publish(topology.dead_queue_name(self._name(logical)), envelope)
                return await self._ack(message, logical, "dead_lettered")
            delay = self._backoff.delay_ms(envelope.attempt)
            log.info(
                "message %s on %s failed on attempt %d (%s): retry in %d ms",
                envelope.message_id,
                logical,
                envelope.attempt,
                exc,
                delay,
            )
            await self._publish(
                topology.delay_queue_name(self._name(logical), delay), envelope.next_attempt()
            )
            return await self._ack(message, logical, "retried")
        return await self._ack(message, logical, "duplicate" if handling.duplicate else "acked")

    def _name(self, logical: str) -> str:
        return topology.queue_name(self._prefix, logical)

    async def _publish(self, queue: str, envelope: Envelope) -> None:
        assert self._publisher is not None
        # The copy's parent is this delivery's span: a retry is the next span of the same trace.
        await self._publisher.default_exchange.publish(
            envelope.to_message(tracing.trace_headers()),
            routing_key=queue,
            mandatory=True,
            timeout=topology.PUBLISH_TIMEOUT_SECONDS,
        )

    async def _publish_raw_dead(
        self, logical: str, message: AbstractIncomingMessage, error: str
    ) -> None:
        assert self._publisher is not None
        await self._publisher.default_exchange.publish(
            aio_pika.Message(
                body=message.body,
                headers={**(message.headers or {}), "x-error": error},
                delivery_mode=topology.PERSISTENT,
                message_id=message.message_id,
            ),
            routing_key=topology.dead_queue_name(self._name(logical)),
            mandatory=True,
            timeout=topology.PUBLISH_TIMEOUT_SECONDS,
        )

    async def _ack(self, message: AbstractIncomingMessage, logical: str, result: str) -> str:
        try:
            await message.ack()
        except Exception as exc:
            # The channel closed under us (broker restart): the broker redelivers the message,
            # and the inbox recognises it.
            log.warning("ack on %s failed (%s): the message will be redelivered", logical, exc)
            return "requeued"
        return result
