"""The service's JSON logs: one object per line whoever writes it, the schema's fields, the
trace context, and redaction of every secret the service handles."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
import uvicorn
from opentelemetry.sdk.trace import TracerProvider

from reference_service.observability import logging as service_logging
from tests.reference_service.observability.conftest import lines


def test_structlog_and_standard_library_lines_are_json_with_the_schema(
    output: io.StringIO,
) -> None:
    service_logging.get_logger("adbm.test").info("created", sku="A-1")
    logging.getLogger("uvicorn.error").warning("Started server process [%d]", 42)
    first, second = lines(output)
    assert list(first)[:4] == ["timestamp", "level", "event", "logger"]
    assert first["event"] == "created" and first["level"] == "info" and first["sku"] == "A-1"
    assert first["logger"] == "adbm.test"
    assert first["timestamp"].endswith("Z")
    assert second["event"] == "Started server process [42]"
    assert second["level"] == "warning" and second["logger"] == "uvicorn.error"


def test_a_library_handler_does_not_print_a_second_copy(output: io.StringIO) -> None:
    library = logging.getLogger("uvicorn.error")
    library.addHandler(logging.StreamHandler(output))
    service_logging.configure("INFO", stream=output)
    library.info("once")
    assert [line["event"] for line in lines(output)] == ["once"]


def test_a_library_level_left_by_a_uvicorn_config_does_not_hide_lines(
    output: io.StringIO,
) -> None:
    # An in-process server elsewhere in the process (as a test's fake provider runs) leaves
    # uvicorn's loggers configured its way: a handler, no propagation, its own level.
    uvicorn.Config(lambda: None, log_level="error").configure_logging()
    service_logging.configure("INFO", stream=output)
    logging.getLogger("uvicorn.error").info("shown")
    assert [line["event"] for line in lines(output)] == ["shown"]


def test_the_level_comes_from_the_settings(output: io.StringIO) -> None:
    service_logging.configure("WARNING", stream=output)
    service_logging.get_logger("adbm.test").info("hidden")
    logging.getLogger("a.library").info("hidden too")
    service_logging.get_logger("adbm.test").warning("shown")
    assert [line["event"] for line in lines(output)] == ["shown"]


def test_a_line_inside_a_span_carries_its_trace_and_span_id(output: io.StringIO) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        service_logging.get_logger("adbm.test").info("inside")
        logging.getLogger("a.library").info("library line inside")
    service_logging.get_logger("adbm.test").info("outside")
    inside, library, outside = lines(output)
    context = span.get_span_context()
    for line in (inside, library):
        assert line["trace_id"] == f"{context.trace_id:032x}"
        assert line["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside


def test_request_fields_are_on_every_line_until_cleared(output: io.StringIO) -> None:
    service_logging.bind_request(request_id="r-1", tenant="t-1", route="/api/v2/products/{id}")
    service_logging.get_logger("adbm.test").info("one")
    logging.getLogger("a.library").info("two")
    service_logging.clear_request()
    service_logging.get_logger("adbm.test").info("three")
    one, two, three = lines(output)
    for line in (one, two):
        assert (line["request_id"], line["tenant"], line["route"]) == (
            "r-1",
            "t-1",
            "/api/v2/products/{id}",
        )
    assert "tenant" not in three


def test_exceptions_are_one_json_line_with_the_traceback(output: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        service_logging.get_logger("adbm.test").exception("failed")
    (line,) = lines(output)
    assert line["level"] == "error"
    assert "RuntimeError: boom" in line["exception"]


SECRETS = (
    "s3cr3t-password",
    "Bearer key-abcdef",
    "idem-key-123",
    "api-key-xyz",
)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"password": "s3cr3t-password"}, "login"),
        ({"authorization": "Bearer key-abcdef"}, "request"),
        (
            {"headers": {"Authorization": "Bearer key-abcdef", "Idempotency-Key": "idem-key-123"}},
            "h",
        ),
        ({"idempotency_key": "idem-key-123"}, "write"),
        ({"x_api_key": "api-key-xyz"}, "request"),
        ({"url": "postgresql://adbm_app:s3cr3t-password@db:5432/adbm"}, "connect"),
        ({"urls": ["amqp://guest:s3cr3t-password@mq:5672/"]}, "connect"),
        ({}, "connecting to redis://:s3cr3t-password@cache:6379/0"),
        ({}, "dsn host=db password=s3cr3t-password dbname=adbm"),
        ({}, "got Authorization: Bearer key-abcdef from the client"),
        ({}, "Idempotency-Key: idem-key-123 replayed"),
    ],
)
def test_secrets_are_never_written(
    output: io.StringIO, fields: dict[str, Any], message: str
) -> None:
    service_logging.get_logger("adbm.test").info(message, **fields)
    logging.getLogger("a.library").info("%s %s", message, fields)
    text = output.getvalue()
    assert len(lines(output)) == 2
    for secret in SECRETS:
        assert secret not in text
    assert service_logging.REDACTED in text


def test_redaction_keeps_what_is_not_secret(output: io.StringIO) -> None:
    service_logging.get_logger("adbm.test").info(
        "connect", url="postgresql://adbm_app@db:5432/adbm", host="db"
    )
    (line,) = lines(output)
    assert line["url"] == "postgresql://adbm_app@db:5432/adbm" and line["host"] == "db"
