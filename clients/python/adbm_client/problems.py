"""RFC 9457 problem details as exceptions: one class per problem type the client acts on,
chosen by the `type` URI (never by the prose), `Problem` for any other."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://adbm.io/problems/"


class Problem(Exception):
    """A 4xx/5xx answer. `type`, `title`, `status`, `detail`, `instance` as sent; `body` all of
    it (extensions such as `errors` or `trace_id` included)."""

    slug: ClassVar[str | None] = None

    def __init__(self, response: httpx.Response, body: dict[str, Any]) -> None:
        self.response = response
        self.body = body
        self.type: str = str(body.get("type", "about:blank"))
        self.title: str = str(body.get("title", response.reason_phrase))
        self.status: int = int(body.get("status", response.status_code))
        self.detail: str | None = body.get("detail")
        self.instance: str | None = body.get("instance")
        super().__init__(f"{self.status} {self.title}: {self.detail or ''}".rstrip(": "))

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.response.headers.get("Retry-After"))


class ValidationFailed(Problem):
    slug = "validation-error"

    @property
    def errors(self) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = self.body.get("errors", [])
        return errors


class InvalidCursor(Problem):
    slug = "invalid-cursor"


class Unauthorized(Problem):
    slug = "unauthorized"


class NotFound(Problem):
    slug = "not-found"


class Conflict(Problem):
    slug = "conflict"


class PreconditionFailed(Problem):
    """Someone changed the resource since you read it: read it again, reapply, retry."""

    slug = "precondition-failed"


class PreconditionRequired(Problem):
    slug = "precondition-required"


class IdempotencyInFlight(Problem):
    slug = "idempotency-in-flight"


class IdempotencyKeyReused(Problem):
    slug = "idempotency-key-reused"


class RateLimited(Problem):
    slug = "rate-limited"


class ServiceUnavailable(Problem):
    slug = "service-unavailable"


_BY_TYPE: dict[str, type[Problem]] = {
    TYPE_BASE + cls.slug: cls
    for cls in (
        ValidationFailed,
        InvalidCursor,
        Unauthorized,
        NotFound,
        Conflict,
        PreconditionFailed,
        PreconditionRequired,
        IdempotencyInFlight,
        IdempotencyKeyReused,
        RateLimited,
        ServiceUnavailable,
    )
    if cls.slug
}


def from_response(response: httpx.Response) -> Problem:
    """The exception for an error response; a body that is not problem+json still gives a
    `Problem` (a proxy in between may answer with HTML)."""
    body: dict[str, Any] = {}
    if response.headers.get("content-type", "").startswith(PROBLEM_CONTENT_TYPE):
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            body = parsed
    cls = _BY_TYPE.get(str(body.get("type")), Problem)
    return cls(response, body)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds; an HTTP-date too)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
