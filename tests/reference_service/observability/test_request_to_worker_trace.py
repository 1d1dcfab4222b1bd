"""One trace from a request to the worker: the order request's trace id is in its access line,
in the outbox row it wrote, in the RabbitMQ headers the relay published, in the worker's log
lines for every message the order caused, and every span of the saga it drove is a descendant
of the request's span; a retried message's next delivery is a child of the failed one (in-memory
span exporter, real PostgreSQL, Redis and RabbitMQ)."""

from __future__ import annotations

import asyncio
import io
import re
import uuid

import aio_pika
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from reference_service.messaging import worker
from reference_service.messaging.consumer import Consumer, Delivery
from tests.reference_service import payment_provider
from tests.reference_service.conftest import DatabaseUrls
from tests.reference_service.http.conftest import Callers, OpenService, assert_problem
from tests.reference_service.messaging.test_consumer import BACKOFF, connection, envelope, prefix
from tests.reference_service.observability.conftest import lines
from tests.reference_service.worker_support import (
    AMQP_URL,
    PUBLISHED_QUEUES,
    admin_rows,
    delete_queues,
    new_prefix,
    queue_names,
    settings_for,
)

__all__ = ["connection", "prefix"]


def hex_id(value: int, digits: int) -> str:
    return f"{value:0{digits}x}"


async def test_a_request_and_the_messages_it_caused_are_one_trace(
    open_service: OpenService,
    callers: Callers,
    database_urls: DatabaseUrls,
    output: io.StringIO,
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with payment_provider.serve() as (_, provider_url):
        settings = settings_for(
            database_urls.app_url, amqp_url=AMQP_URL, prefix=new_prefix(), provider_url=provider_url
        )
        service = await open_service(
            tracer_provider=provider,
            queue_prefix=settings.queue_prefix,
            payment_provider_url=provider_url,
        )
        client, headers = service.client, callers.a.headers
        try:
            # A problem names its request's trace, the one its access line carries.
            missing = await client.get(f"/api/v1/orders/{uuid.uuid4()}", headers=headers)
            problem = assert_problem(missing, 404, "not-found")
            access = [line for line in lines(output) if line["logger"] == "adbm.access"]
            assert access[-1]["route"] == "/api/v1/orders/{order_id}"
            assert access[-1]["trace_id"] == problem["trace_id"]

            account = await client.post(
                "/api/v1/accounts",
                json={"name": "a", "currency": "EUR", "balance_minor": 1_000},
                headers=headers,
            )
            product = await client.post(
                "/api/v1/products",
                json={"sku": "s", "name": "p", "price_minor": 300, "currency": "EUR"},
                headers=headers,
            )
            accepted = await client.post(
                "/api/v1/orders",
                json={
                    "account_id": account.json()["id"],
                    "product_id": product.json()["id"],
                    "quantity": 1,
                },
                headers={**headers, "X-Request-Id": "order-request"},
            )
            assert accepted.status_code == 202, accepted.text
            order_id = accepted.json()["id"]
            request_line = next(
                line for line in lines(output) if line.get("request_id") == "order-request"
            )
            assert request_line["logger"] == "adbm.access"
            trace_id = request_line["trace_id"]
            assert re.fullmatch(r"[0-9a-f]{32}", trace_id)

            # The outbox row keeps the context of the span that wrote it: the request's trace.
            rows = await admin_rows(database_urls.admin_url, "SELECT traceparent FROM outbox")
            assert [row["traceparent"].split("-")[1] for row in rows] == [trace_id]

            stop = asyncio.Event()
            running = asyncio.create_task(
                worker.run(
                    settings, PUBLISHED_QUEUES, prefetch=8, stop=stop, tracer_provider=provider
                )
            )
            try:
                async with asyncio.timeout(60):  # a guard against a hang, not a measurement
                    while True:
                        polled = await client.get(f"/api/v1/orders/{order_id}", headers=headers)
                        notified = await admin_rows(
                            database_urls.admin_url, "SELECT 1 FROM notifications"
                        )
                        if polled.json()["status"] == "CONFIRMED" and notified:
                            break
                        await asyncio.sleep(0.1)
            finally:
                stop.set()
                await running
        finally:
            await delete_queues(
                AMQP_URL,
                queue_names(settings.queue_prefix, PUBLISHED_QUEUES, worker.backoff(settings)),
            )

    # The worker's line for each message the order caused carries the request's trace id, the
    # queue and the message id.
    handled = [line for line in lines(output) if line["logger"] == "adbm.consume"]
    assert [(line["queue"], line["result"]) for line in handled] == [
        ("orders.place", "acked"),  # reserve
        ("orders.place", "acked"),  # charge
        ("orders.place", "acked"),  # confirm
        ("notifications.email", "acked"),
    ]
    assert {line["trace_id"] for line in handled} == {trace_id}
    assert all(re.fullmatch(r"[0-9a-f]{16}", line["span_id"]) for line in handled)
    assert all(uuid.UUID(line["message_id"]) for line in handled)
    # Every line written while a message was handled names it (a library's lines included).
    for line in lines(output):
        if line.get("message_id") is not None and line["logger"] != "adbm.access":
            assert line["trace_id"] == trace_id, line

    # The spans: one tree rooted at the request's server span.
    traced = [s for s in spans.get_finished_spans() if hex_id(s.context.trace_id, 32) == trace_id]
    by_id = {s.context.span_id: s for s in traced}
    roots = [s for s in traced if s.parent is None]
    assert [s.name for s in roots] == ["POST /api/v1/orders"]
    assert all(s.parent is None or s.parent.span_id in by_id for s in traced)

    def parent(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None
        return by_id[span.parent.span_id]

    names = [s.name for s in traced]
    for step in ("reserve", "charge", "confirm"):
        (step_span,) = [s for s in traced if s.name == f"saga order_placement {step}"]
        assert parent(step_span).name == "process orders.place"
        assert parent(parent(step_span)).name == "publish orders.place"
    (notification,) = [s for s in traced if s.name == "process notifications.email"]
    assert parent(notification).name == "publish notifications.email"
    assert names.count("publish orders.place") == 3
    assert names.count("process orders.place") == 3
    (first_publish,) = [
        s
        for s in traced
        if s.name == "publish orders.place"
        and parent(s).name == "postgresql transaction"
        and parent(parent(s)).name == "POST /api/v1/orders"
    ]
    assert first_publish.attributes is not None
    assert first_publish.attributes["messaging.destination.name"] == (
        f"{settings.queue_prefix}orders.place"
    )


async def test_a_retried_message_is_the_next_span_of_the_same_trace(
    connection: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    done = asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        if delivery.envelope.attempt == 1:
            raise RuntimeError("transient")
        done.set()

    consumer = Consumer(
        connection,
        {"jobs": handler},
        prefix=prefix,
        prefetch=1,
        backoff=BACKOFF,
        tracer=provider.get_tracer("test"),
    )
    await consumer.start()
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    channel = await connection.channel(publisher_confirms=True)
    await channel.default_exchange.publish(
        envelope(uuid.uuid4()).to_message({"traceparent": caller}),
        routing_key=f"{prefix}jobs",
    )
    async with asyncio.timeout(20):
        await done.wait()
    await consumer.stop(5)
    first, second = [s for s in spans.get_finished_spans() if s.name == "process jobs"]
    assert first.parent is not None and second.parent is not None
    assert hex_id(first.context.trace_id, 32) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first.parent.span_id == 0x00F067AA0BA902B7  # the publisher's span
    assert second.context.trace_id == first.context.trace_id
    assert second.parent.span_id == first.context.span_id  # the failed attempt's span
    assert first.attributes is not None and first.attributes["adbm.message.result"] == "retried"
