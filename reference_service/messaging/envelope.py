"""The message format on the wire: a JSON payload plus the ids a consumer needs.

- `message_id`: the outbox row's id, the same for every copy of the message (redeliveries,
  retries, a second publish after a relay crash): it is what the inbox deduplicates on.
- header `x-tenant-id`: the tenant whose transaction the consumer opens (RLS applies to it);
- header `x-attempt`: 1 for the first delivery, raised by one on each retry;
- headers `traceparent` and `tracestate` (W3C Trace Context, as in HTTP): the span that published
  this copy, so the consumer's span is its child and joins the trace of the request that caused
  the message.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from reference_service.messaging.topology import PERSISTENT

TENANT_HEADER = "x-tenant-id"
ATTEMPT_HEADER = "x-attempt"
TOPIC_HEADER = "x-topic"


class MalformedMessage(ValueError):
    """A delivery this service cannot read: it is dead-lettered at once, never retried."""


@dataclass(frozen=True)
class Envelope:
    message_id: uuid.UUID
    tenant_id: uuid.UUID
    topic: str
    """The logical queue name (`orders.place`), without the deployment's queue prefix."""
    payload: dict[str, Any]
    attempt: int = 1

    def to_message(self, trace_context: Mapping[str, str] | None = None) -> aio_pika.Message:
        """The message to publish; `trace_context` (`tracing.trace_headers()`) goes into its
        headers."""
        return aio_pika.Message(
            body=json.dumps(self.payload, separators=(",", ":")).encode(),
            content_type="application/json",
            delivery_mode=PERSISTENT,
            message_id=str(self.message_id),
            headers={
                TENANT_HEADER: str(self.tenant_id),
                ATTEMPT_HEADER: self.attempt,
                TOPIC_HEADER: self.topic,
                **(trace_context or {}),
            },
        )

    def next_attempt(self) -> Envelope:
        return Envelope(self.message_id, self.tenant_id, self.topic, self.payload, self.attempt + 1)


def from_message(message: AbstractIncomingMessage) -> Envelope:
    """The envelope of a delivery, or MalformedMessage."""
    headers = message.headers or {}
    try:
        if message.message_id is None:
            raise MalformedMessage("no message_id")
        payload = json.loads(message.body)
        if not isinstance(payload, dict):
            raise MalformedMessage("the body is not a JSON object")
        attempt = headers.get(ATTEMPT_HEADER, 1)
        if not isinstance(attempt, int) or attempt < 1:
            raise MalformedMessage(f"bad {ATTEMPT_HEADER} {attempt!r}")
        return Envelope(
            message_id=uuid.UUID(message.message_id),
            tenant_id=uuid.UUID(str(headers[TENANT_HEADER])),
            topic=str(headers.get(TOPIC_HEADER, "")),
            payload=payload,
            attempt=attempt,
        )
    except KeyError as exc:
        raise MalformedMessage(f"missing header {exc.args[0]}") from exc
    except (ValueError, TypeError) as exc:
        if isinstance(exc, MalformedMessage):
            raise
        raise MalformedMessage(str(exc)) from exc
