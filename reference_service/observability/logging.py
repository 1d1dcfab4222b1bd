"""JSON logs for every process of the service (API, worker, relay): one object per line.

structlog renders every line, the standard library's included (uvicorn's error log, psycopg's,
aio-pika's, ...), through one `ProcessorFormatter` on the root logger, so a line never escapes
the schema whatever library wrote it. The schema:

- `timestamp` (RFC 3339, UTC), `level`, `event`, `logger`;
- `trace_id`, `span_id` of the current OpenTelemetry span, when there is one;
- whatever the request bound with `bind_request()`: `request_id`, `tenant`, `route` (the
  template, never the raw path), and, on the access line, `status` and `duration_ms`;
- on a worker's lines while it handles a message: `queue` and `message_id` (bound by the
  consumer and the relay), and on its one line per delivery (`adbm.consume`): `result`,
  `attempt`, `duration_ms`;
- `object` (`namespace`, `name`, `uid`) on the operator's lines about a Kubernetes object;
- `exception` (the formatted traceback) on error lines.

Secrets never reach the output: `redact` runs last before rendering, on every line.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, Final, TextIO

import structlog
from opentelemetry import trace

REDACTED: Final = "***"

# Field names whose values are secret as a whole, compared case-insensitively with `-` read as
# `_` (so a logged header mapping is covered as well as a keyword argument).
SECRET_FIELDS: Final = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "idempotency_key",
        "x_api_key",
        "api_key",
        "password",
        "passwd",
        "secret",
        "cursor_secret",
        "token",
    }
)

# `scheme://user:password@host` -> `scheme://user:***@host`; libpq's `password=...` keywords.
_URL_PASSWORD: Final = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?=@)")
_KEYWORD_PASSWORD: Final = re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)('[^']*'|\S+)")
# A secret header written into a message, e.g. `Authorization: Bearer abc`.
_HEADER_VALUE: Final = re.compile(
    r"(?i)(?P<head>\b(?:authorization|idempotency-key|x-api-key|cookie)\s*[:=]\s*)[^\r\n,;]+"
)


# A secret field inside a mapping's repr or a JSON text: `'password': 'x'`, `"token": "y"`.
_QUOTED_FIELD: Final = re.compile(
    r"(?i)(?P<head>['\"](?:"
    + "|".join(name.replace("_", "[-_]") for name in sorted(SECRET_FIELDS))
    + r")['\"]\s*:\s*)(?P<quote>['\"])(?:(?!(?P=quote)).)*(?P=quote)"
)


# What every pattern above needs somewhere in the text: one search clears the typical string (a
# route, an id, a status) instead of four substitutions, on every field of every line.
_MAY_HOLD_SECRET: Final = re.compile(
    r"(?i)@|pass(?:word|wd)|authorization|idempotency|api[-_]key|cookie|secret|token"
)


@functools.lru_cache(maxsize=1024)
def _secret_field(name: object) -> bool:
    return isinstance(name, str) and name.lower().replace("-", "_") in SECRET_FIELDS


def redact_text(text: str) -> str:
    if _MAY_HOLD_SECRET.search(text) is None:
        return text
    text = _URL_PASSWORD.sub(rf"\g<head>{REDACTED}", text)
    text = _QUOTED_FIELD.sub(rf"\g<head>\g<quote>{REDACTED}\g<quote>", text)
    text = _KEYWORD_PASSWORD.sub(rf"\g<head>{REDACTED}", text)
    return _HEADER_VALUE.sub(rf"\g<head>{REDACTED}", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if _secret_field(k) else _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


# Fields this module and the access line produce themselves, from values that cannot hold a
# secret (a clock, ids in hex, a route template, a status): not searched, on every line.
_OWN_FIELDS: Final = frozenset(
    {"timestamp", "level", "logger", "trace_id", "span_id", "route", "method", "status"}
)


def redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: secret fields blanked, credentials cut out of every string."""
    for key, value in event_dict.items():
        if key in _OWN_FIELDS:
            continue
        event_dict[key] = REDACTED if _secret_field(key) else _redact_value(value)
    return event_dict


def add_trace_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ids, so a line joins its trace."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", f"{context.trace_id:032x}")
        event_dict.setdefault("span_id", f"{context.span_id:016x}")
    return event_dict


def add_kube_object(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: a Kopf object logger's line names its object as `object`
    (namespace, name, uid). Kopf passes the object's reference as the record's `k8s_ref`."""
    record = event_dict.get("_record")
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, Mapping):
        event_dict["object"] = {key: ref.get(key) for key in ("namespace", "name", "uid")}
    return event_dict


def _rename_message(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # A standard-library record's `%`-formatted message becomes the `event`; structlog's
    # `_record`/`_from_structlog` bookkeeping never reaches the output.
    event_dict.pop("_record", None)
    event_dict.pop("_from_structlog", None)
    return event_dict


# The schema's fields first, in this order, then whatever else a line carries.
_ORDER: Final = ("timestamp", "level", "event", "logger", "trace_id", "span_id")


def _order_fields(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    ordered = {key: event_dict.pop(key) for key in _ORDER if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        add_trace_context,
    ]


def _enabled_for_its_logger(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # The standard library's levels decide for structlog's lines too (the root level from the
    # settings, any per-logger level, a disabled logger): one rule for every line.
    level = _LEVELS.get(method, logging.ERROR)
    if not logging.getLogger(logger.name).isEnabledFor(level):
        raise structlog.DropEvent
    event_dict["logger"] = logger.name
    return event_dict


_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def _final_processors() -> list[Any]:
    return [
        structlog.processors.format_exc_info,
        redact,
        _order_fields,
        structlog.processors.JSONRenderer(sort_keys=False),
    ]


class _HandlerSink:
    """structlog's output: the rendered line written to the standard-library handler's
    stream under that handler's lock, so both kinds of lines interleave whole."""

    def __init__(self, handler: logging.StreamHandler[TextIO], name: str) -> None:
        self._handler = handler
        self.name = name

    def msg(self, line: str) -> None:
        handler = self._handler
        handler.acquire()
        try:
            handler.stream.write(line + "\n")
            handler.flush()
        finally:
            handler.release()

    debug = info = warning = error = critical = exception = log = msg


def configure(level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every logger of the process, structlog's and the standard library's, to one JSON
    handler on `stream` at `level`. Idempotent. The default stream is standard error, as for
    uvicorn and Kopf: standard output stays the commands' own (a key, a table, JSON).

    A standard-library record is rendered by the handler's `ProcessorFormatter`; a structlog
    line (the access line on every request) skips the standard library and is rendered by
    structlog's own chain straight to the same stream: a LogRecord and its copy cost more than
    the rest of the line."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                *_shared_processors(),
                structlog.stdlib.add_logger_name,
                add_kube_object,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _rename_message,
                *_final_processors(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Warnings (deprecations, unawaited coroutines) are lines of the process too.
    logging.captureWarnings(True)
    # Libraries that install handlers of their own would print a second, non-JSON copy; a level
    # of their own (uvicorn.Config sets one on uvicorn.error) would override `level`.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "aio_pika", "aiormq"):
        library = logging.getLogger(name)
        library.handlers[:] = []
        library.propagate = True
        library.setLevel(logging.NOTSET)
    # The access line is ours (`access_line`): it knows the route template and the tenant.
    logging.getLogger("uvicorn.access").disabled = True
    sinks: dict[str, _HandlerSink] = {}

    def sink(name: str = "root", *_args: Any) -> _HandlerSink:
        found = sinks.get(name)
        if found is None:
            found = sinks[name] = _HandlerSink(handler, name)
        return found

    structlog.configure(
        processors=[
            _enabled_for_its_logger,
            *_shared_processors(),
            structlog.processors.StackInfoRenderer(),
            *_final_processors(),
        ],
        logger_factory=sink,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        # Not cached: a module-level logger must follow a later `configure` (a new stream).
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger whose lines name `name` as their `logger`."""
    return structlog.get_logger(name)


def bind_request(**fields: Any) -> None:
    """Fields every line of the current request (or message) carries from here on."""
    structlog.contextvars.bind_contextvars(**fields)


def clear_request() -> None:
    structlog.contextvars.clear_contextvars()
