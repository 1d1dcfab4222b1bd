"""RFC 9457 problem details: the one place where errors become HTTP responses.

Every error the service answers with is `application/problem+json` carrying `type`, `title`,
`status`, `detail` and `instance`. `type` is an absolute URI from the registry below, so clients
branch on it rather than on prose; the README documents every registered type. Routes raise
`Problem`; the handlers installed by `install` turn it, the framework's own errors and the data
layer's errors into responses, and turn anything unexpected into a generic 500 that never shows
the exception's text (which may hold SQL, data or secrets).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Receive, Scope, Send

from reference_service.db.pool import PoolExhausted
from reference_service.db.repository import NotFound, StaleVersion
from reference_service.domain.common import Refused
from reference_service.domain.orders import OrderRejected
from reference_service.observability import metrics
from reference_service.observability.tracing import current_trace_id

log = logging.getLogger(__name__)

MEDIA_TYPE: Final = "application/problem+json"
TYPE_BASE: Final = "https://adbm.io/problems/"

# Members every problem has; extension members may not shadow them.
_STANDARD_MEMBERS: Final = frozenset({"type", "title", "status", "detail", "instance", "trace_id"})


@dataclass(frozen=True)
class ProblemType:
    """One registered problem type: the same slug always means the same status and title."""

    slug: str
    title: str
    status: int
    description: str

    @property
    def uri(self) -> str:
        return TYPE_BASE + self.slug


# Every problem type of the service, declared here and nowhere else: the modules that raise
# them (rate limits, idempotency, body limits) import them, so nothing depends on import order.

VALIDATION_ERROR: Final = ProblemType(
    "validation-error",
    "Request is not valid",
    400,
    "A parameter or the body failed validation; `errors` lists each one as "
    "`{in, pointer, detail}` (`pointer` is a JSON pointer into the body or names the parameter).",
)
INVALID_CURSOR: Final = ProblemType(
    "invalid-cursor",
    "Pagination cursor is not valid",
    400,
    "The `cursor` parameter was not issued by this service, was altered, or belongs to another "
    "collection; restart from the first page.",
)
UNAUTHORIZED: Final = ProblemType(
    "unauthorized",
    "Authentication required",
    401,
    "No `Authorization: Bearer <API key>` header, or the key is unknown or revoked.",
)
NOT_FOUND: Final = ProblemType(
    "not-found",
    "Not found",
    404,
    "No such route, or no such resource for your tenant (resources of other tenants and deleted "
    "resources are indistinguishable from ones that never existed).",
)
METHOD_NOT_ALLOWED: Final = ProblemType(
    "method-not-allowed",
    "Method not allowed",
    405,
    "The route exists but not with this method; the `Allow` header lists the methods it has.",
)
GONE: Final = ProblemType(
    "gone",
    "API version retired",
    410,
    "This API version is past its sunset date and no longer served; the `Link` header with "
    '`rel="successor-version"` names the version to use instead.',
)
CONFLICT: Final = ProblemType(
    "conflict",
    "Conflict",
    409,
    "The change would break a uniqueness rule, such as a second product with the same `sku`.",
)
PRECONDITION_FAILED: Final = ProblemType(
    "precondition-failed",
    "Precondition failed",
    412,
    "`If-Match` names a version that is no longer current: someone changed the resource since "
    "you read it. GET it again, reapply your change, and retry with the new `ETag`.",
)
PRECONDITION_REQUIRED: Final = ProblemType(
    "precondition-required",
    "Precondition required",
    428,
    'This change needs `If-Match: "<version>"` (the `ETag` of your last read), so that two '
    "writers cannot silently overwrite each other.",
)
INTERNAL_ERROR: Final = ProblemType(
    "internal-error",
    "Internal server error",
    500,
    "An unexpected error; the details are in the service's logs, never in the response.",
)
SERVICE_UNAVAILABLE: Final = ProblemType(
    "service-unavailable",
    "Service unavailable",
    503,
    "A dependency is busy or down (for example no database connection was free in time); "
    "retry after `Retry-After` seconds.",
)
PAYLOAD_TOO_LARGE: Final = ProblemType(
    "payload-too-large",
    "Payload too large",
    413,
    "The request body is larger than the service accepts (`ADBM_MAX_BODY_BYTES`).",
)
UNSUPPORTED_MEDIA_TYPE: Final = ProblemType(
    "unsupported-media-type",
    "Unsupported media type",
    415,
    "The body is not `application/json`; `Accept-Post` or `Accept-Patch` names what the route "
    "takes.",
)
RATE_LIMITED: Final = ProblemType(
    "rate-limited",
    "Too many requests",
    429,
    "The caller used up its rate limit; retry after `Retry-After` seconds. `RateLimit` and "
    "`RateLimit-Policy` describe the quota and how much of it is left.",
)
IDEMPOTENCY_KEY_REQUIRED: Final = ProblemType(
    "idempotency-key-required",
    "Idempotency-Key required",
    400,
    "This route changes state: send `Idempotency-Key` with a unique value per logical operation "
    "(1 to 255 visible ASCII characters, e.g. a UUID) and reuse it when retrying.",
)
IDEMPOTENCY_IN_FLIGHT: Final = ProblemType(
    "idempotency-in-flight",
    "Request with this Idempotency-Key is in progress",
    409,
    "A request with the same `Idempotency-Key` is still being processed; retry after "
    "`Retry-After` seconds to receive its response.",
)
IDEMPOTENCY_KEY_REUSED: Final = ProblemType(
    "idempotency-key-reused",
    "Idempotency-Key reused with another request",
    422,
    "The `Idempotency-Key` was already used with a different method, path or body; use a new "
    "key for a new operation.",
)
ORDER_REJECTED: Final = ProblemType(
    "order-rejected",
    "Order rejected",
    422,
    "The order cannot be placed as asked: the product's currency differs from the account's, "
    "or the total is out of range.",
)

# The domain's refusals (`domain.common.Refused`), each answered as its own problem type.
REFUSALS: Final[Mapping[type[Refused], ProblemType]] = {OrderRejected: ORDER_REJECTED}

REGISTRY: Final[Mapping[str, ProblemType]] = {
    kind.slug: kind
    for kind in (
        VALIDATION_ERROR,
        INVALID_CURSOR,
        UNAUTHORIZED,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        GONE,
        CONFLICT,
        PRECONDITION_FAILED,
        PRECONDITION_REQUIRED,
        INTERNAL_ERROR,
        SERVICE_UNAVAILABLE,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        RATE_LIMITED,
        IDEMPOTENCY_KEY_REQUIRED,
        IDEMPOTENCY_IN_FLIGHT,
        IDEMPOTENCY_KEY_REUSED,
        ORDER_REJECTED,
    )
}


def openapi_responses(kinds: Iterable[ProblemType]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of an operation that can answer with `kinds`, by status."""
    titles: dict[int, list[str]] = {}
    for kind in kinds:
        names = titles.setdefault(kind.status, [])
        entry = f"{kind.title} ({kind.uri})"
        if entry not in names:
            names.append(entry)
    return {
        status: {"description": "; ".join(names), "content": {MEDIA_TYPE: {}}}
        for status, names in sorted(titles.items())
    }


class Problem(Exception):
    """An error with a registered type, raised anywhere below a route.

    `extra` becomes extension members of the response body; `headers` (such as `Retry-After`
    or `WWW-Authenticate`) are sent with it.
    """

    def __init__(
        self,
        kind: ProblemType,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        clash = _STANDARD_MEMBERS.intersection(extra)
        if clash:
            raise ValueError(f"extension members may not replace {sorted(clash)}")
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = extra

    @property
    def status(self) -> int:
        return self.kind.status


def problem_response(
    request: Request,
    kind: ProblemType,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": kind.uri,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
        "instance": request.url.path,
    }
    trace_id = current_trace_id()
    if trace_id is not None:
        body["trace_id"] = trace_id  # what an operator searches the traces and logs by
    body.update(extra or {})
    metrics.PROBLEMS.labels(kind.slug, str(kind.status)).inc()
    return JSONResponse(body, status_code=kind.status, headers=headers, media_type=MEDIA_TYPE)


def retry_after(seconds: float) -> str:
    """`Retry-After` is whole seconds; round up so a client never comes back too early."""
    return str(max(1, math.ceil(seconds)))


def json_pointer(parts: Sequence[int | str]) -> str:
    """RFC 6901 pointer: `~` and `/` inside a token are escaped as `~0` and `~1`."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def validation_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """FastAPI's error list as `{in, pointer, detail}` entries.

    The submitted value (`input`) is left out on purpose: echoing it back would reflect
    arbitrary, possibly huge or secret, client data into responses and logs.
    """
    out: list[dict[str, str]] = []
    for error in errors:
        loc = list(error.get("loc", ()))
        where = str(loc.pop(0)) if loc else "body"
        if where == "body" and error.get("type") == "json_invalid":
            # The location of a JSON syntax error is a character offset, not a member.
            loc = []
        out.append({"in": where, "pointer": json_pointer(loc), "detail": str(error.get("msg"))})
    return out


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(request, exc.kind, exc.detail, headers=exc.headers, extra=exc.extra)


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc.errors())
    noun = "error" if len(errors) == 1 else "errors"
    return problem_response(
        request,
        VALIDATION_ERROR,
        f"The request has {len(errors)} validation {noun}.",
        extra={"errors": errors},
    )


_METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path.

    Starlette raises 405 from the first route whose path matches, so its `Allow` names only
    that route's methods, where RFC 9110 wants all of the resource's (GET and POST on a
    collection). Asking every route whether it would take the path with each method uses only
    the public `matches`, whatever nesting of included routers holds the routes; it runs only
    for 405s.
    """
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        return problem_response(request, NOT_FOUND, "No such route.", headers=headers)
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
        return problem_response(
            request,
            METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed here.",
            headers=headers,
        )
    # Any other framework status has no meaning of its own beyond the status code, which is
    # what RFC 9457 reserves "about:blank" for.
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:  # a status code without a registered reason phrase
        phrase = "Error"
    body = {
        "type": "about:blank",
        "title": phrase,
        "status": exc.status_code,
        "detail": exc.detail if isinstance(exc.detail, str) else phrase,
        "instance": request.url.path,
    }
    trace_id = current_trace_id()
    if trace_id is not None:
        body["trace_id"] = trace_id
    metrics.PROBLEMS.labels("about:blank", str(exc.status_code)).inc()
    return JSONResponse(body, status_code=exc.status_code, headers=headers, media_type=MEDIA_TYPE)


async def _on_not_found(request: Request, exc: Exception) -> JSONResponse:
    # The same words whether the row never existed, was deleted, or belongs to another tenant
    # (RLS hides it): anything more specific would tell one tenant about another's data.
    return problem_response(request, NOT_FOUND, "No such resource.")


async def _on_stale(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(
        request,
        PRECONDITION_FAILED,
        "The resource has changed since the version in If-Match; read it again and retry.",
    )


async def _on_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    return problem_response(request, REFUSALS[type(exc)], str(exc))


async def _on_pool_exhausted(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PoolExhausted)
    return problem_response(
        request,
        SERVICE_UNAVAILABLE,
        "No database connection was free in time.",
        headers={"Retry-After": retry_after(exc.retry_after)},
    )


async def _on_unique_violation(request: Request, exc: Exception) -> JSONResponse:
    # The constraint's detail would echo stored values back; the client knows what it sent.
    return problem_response(
        request, CONFLICT, "Another resource already has the same unique values (such as sku)."
    )


async def _on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    # A lost connection or a server-side cancellation (statement timeout, shutdown) is the
    # database's state, not a bug in the request: worth a retry, so 503 rather than 500.
    # Handled errors are not re-raised to the server, so this is where they reach the logs.
    log.warning("database error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request,
        SERVICE_UNAVAILABLE,
        "The database did not complete the request.",
        headers={"Retry-After": retry_after(1)},
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception after this response is sent, so the server logs it
    # with its traceback; the client learns only that it happened.
    return problem_response(request, INTERNAL_ERROR, "An unexpected error occurred.")


def install(app: FastAPI) -> None:
    """Make every error of `app` a problem response."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(NotFound, _on_not_found)
    app.add_exception_handler(StaleVersion, _on_stale)
    for refusal in REFUSALS:
        app.add_exception_handler(refusal, _on_refused)
    app.add_exception_handler(PoolExhausted, _on_pool_exhausted)
    app.add_exception_handler(psycopg.errors.UniqueViolation, _on_unique_violation)
    app.add_exception_handler(psycopg.OperationalError, _on_database_unavailable)
    # Registered for `Exception`, Starlette runs it in its outermost middleware, after every
    # other handler and middleware has had its chance.
    app.add_exception_handler(Exception, _on_unexpected)


async def answer_unhandled(
    exc: Exception, scope: Scope, receive: Receive, send: Send, *, started: bool
) -> None:
    """Answer an exception the app did not handle, from inside a middleware, then re-raise.

    Starlette answers unhandled exceptions in its outermost middleware, outside every other
    one, so a middleware that adds to responses (headers, the request's trace) would see its
    500 go out without them. Answered here with the app's own handler instead; re-raised, the
    exception still reaches the server's log, and the outer middleware sends nothing more once
    a response has started.
    """
    handler = scope["app"].exception_handlers.get(Exception)
    if started or handler is None:
        raise exc
    response = await handler(Request(scope), exc)
    await response(scope, receive, send)
    raise exc
