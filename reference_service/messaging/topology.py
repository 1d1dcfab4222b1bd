"""Queue names and arguments: each work queue, its delay queues and its dead-letter queue.

A message that fails is republished to a delay queue whose fixed TTL is the backoff of that
attempt; when the TTL expires RabbitMQ dead-letters it back to the work queue. One delay queue per
attempt (rather than one queue with per-message expirations) because RabbitMQ only expires the
message at the head of a queue: a long delay in front would hold back a short one behind it.
After the last attempt the message goes to `<queue>.dead`, where it stays for a person to look at.

Every queue is durable and every message persistent, so a broker restart loses nothing that was
confirmed. The TTL is part of a delay queue's name: RabbitMQ refuses to redeclare a queue with
other arguments, so changing the backoff declares new queues instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel


@dataclass(frozen=True)
class Backoff:
    max_attempts: int
    base_seconds: float

    def delay_ms(self, attempt: int) -> int:
        """Delay before delivery `attempt + 1`, after delivery `attempt` (1-based) failed."""
        return max(1, round(self.base_seconds * 1000 * 2.0 ** (attempt - 1)))


def queue_name(prefix: str, queue: str) -> str:
    return f"{prefix}{queue}"


def delay_queue_name(work_queue: str, delay_ms: int) -> str:
    return f"{work_queue}.retry.{delay_ms}ms"


def dead_queue_name(work_queue: str) -> str:
    return f"{work_queue}.dead"


def delay_queue_arguments(work_queue: str, delay_ms: int) -> dict[str, Any]:
    return {
        "x-message-ttl": delay_ms,
        # The default exchange routes by queue name: back to the work queue.
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": work_queue,
    }


async def declare(channel: AbstractChannel, work_queue: str, backoff: Backoff) -> None:
    """Declare a work queue with its delay queues and dead-letter queue (idempotent).

    Both the relay (before publishing to a queue) and the worker (before consuming) declare: a
    message published to the default exchange for a queue that does not exist yet would be
    dropped by the broker.
    """
    await channel.declare_queue(work_queue, durable=True)
    await channel.declare_queue(dead_queue_name(work_queue), durable=True)
    for attempt in range(1, backoff.max_attempts):
        delay = backoff.delay_ms(attempt)
        await channel.declare_queue(
            delay_queue_name(work_queue, delay),
            durable=True,
            arguments=delay_queue_arguments(work_queue, delay),
        )


PERSISTENT = aio_pika.DeliveryMode.PERSISTENT

PUBLISH_TIMEOUT_SECONDS = 10.0
"""How long a publish waits for the broker's confirm: a broker that is away must not hold the
relay's transaction (and its row locks) or a retrying handler forever."""
