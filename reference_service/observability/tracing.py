"""Tracing with OpenTelemetry: one server span per request, W3C trace context in; the trace
context carried through the outbox and RabbitMQ so a worker's spans join the request's trace.

The sampler is parent-based with the ratio the operator renders (`ADBM_TRACE_SAMPLING_RATIO`):
a caller's sampling decision is kept. An unsampled span still has a real trace id, so every
request has one to put into its problem details and logs. Spans are exported over OTLP to the
collector sidecar when the environment names one (`OTEL_EXPORTER_OTLP_ENDPOINT`, unless
`OTEL_TRACES_EXPORTER=none`); without it nothing is exported.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reference_service.config import Settings

Unhandled = Callable[..., Awaitable[None]]
"""Answers an exception nothing else handled: `(exc, scope, receive, send, *, started)`."""


def provider(settings: Settings) -> TracerProvider:
    tracer_provider = TracerProvider(
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sampling_ratio)),
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "adbm")}),
    )
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if endpoint and os.environ.get("OTEL_TRACES_EXPORTER", "otlp") != "none":
        # Imported only when exporting: grpc is heavy and most processes here never export.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return tracer_provider


# The tracer of the request (or message) being handled, so that code below the HTTP layer
# (the pool, the Redis engines) starts its spans with the provider of the app that serves it,
# without a process-global provider that every app and test would share.
_TRACER: ContextVar[trace.Tracer | None] = ContextVar("adbm_tracer", default=None)


def use_tracer(tracer: trace.Tracer) -> None:
    """Child spans of the current context (`client_span`) are started with `tracer`."""
    _TRACER.set(tracer)


@contextmanager
def client_span(name: str, attributes: Mapping[str, AttributeValue]) -> Iterator[None]:
    """A CLIENT span around one call to a backend (PostgreSQL, Redis, RabbitMQ), child of the
    current span. Nothing is built when that span is not recorded (the sampler said no, or
    there is none): the sampler is parent-based, so the child would be dropped anyway, and the
    unsampled majority of requests pays one context-variable read."""
    tracer = _TRACER.get()
    if tracer is None or not trace.get_current_span().is_recording():
        yield
        return
    with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT, attributes=attributes):
        yield


def tracer() -> trace.Tracer:
    """The tracer of the current request or message (`use_tracer`); the API's no-op tracer,
    which still carries a parent's ids into its spans, when none is bound."""
    return _TRACER.get() or trace.get_tracer("reference_service")


# W3C Trace Context only (`traceparent`, `tracestate`), whatever the global propagator is: what
# crosses the outbox and the broker is that standard, never baggage.
_W3C = TraceContextTextMapPropagator()
TRACE_HEADERS = ("traceparent", "tracestate")


def trace_headers() -> dict[str, str]:
    """The current span's W3C trace context (`traceparent`, and `tracestate` when it has one);
    empty outside any span. An unsampled span's context is carried too (flags 00): the
    consumer's spans then keep the trace id, so its log lines join the request's."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, object]) -> Context:
    """The parent context a carrier (message headers, an outbox row) names; an empty context,
    so a new trace, when it names none or an invalid one."""
    return _W3C.extract(
        {k: v for k, v in carrier.items() if k in TRACE_HEADERS and isinstance(v, str)}
    )


def current_trace_id() -> str | None:
    """The trace id of the request being served, as 32 lower-case hex digits."""
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


class RequestSpans:
    """Pure ASGI middleware: a server span around each HTTP request, continuing the caller's
    trace (`traceparent`) when there is one.

    `on_unhandled` answers an exception that escaped the app, inside the span, so that even the
    500 names the request's trace. It is passed in (the HTTP layer's problem answer) rather than
    imported: observability knows nothing of the HTTP layer above it.
    """

    def __init__(
        self, app: ASGIApp, tracer_provider: TracerProvider, on_unhandled: Unhandled
    ) -> None:
        self.app = app
        self.tracer = tracer_provider.get_tracer("reference_service")
        self.on_unhandled = on_unhandled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        parent = propagate.extract(carrier)
        method = scope["method"]
        # Each request runs in a task of its own: this binding ends with it.
        _TRACER.set(self.tracer)
        # Named by the method alone until the router has matched a route: the raw path would
        # make one span name per id.
        with self.tracer.start_as_current_span(
            method, context=parent, kind=trace.SpanKind.SERVER
        ) as span:
            span.set_attribute("http.request.method", method)
            started = False

            async def tracked_send(message: Message) -> None:
                nonlocal started
                if message["type"] == "http.response.start":
                    started = True
                    span.set_attribute("http.response.status_code", message["status"])
                await send(message)

            try:
                await self.app(scope, receive, tracked_send)
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR)
                await self.on_unhandled(exc, scope, receive, tracked_send, started=started)
            finally:
                template = getattr(scope.get("route"), "path", None)
                if isinstance(template, str):
                    span.update_name(f"{method} {template}")
                    span.set_attribute("http.route", template)
