"""API version deprecation, from `settings.policy.versioning`.

Every response under a deprecated version's prefix (`/api/<version>`), errors included, carries

- `Deprecation: @<unix seconds>` (RFC 9745: a structured-field date),
- `Sunset: <HTTP-date>` (RFC 8594), and
- when the policy names a link, `Link: <link>; rel="deprecation", <link>; rel="sunset"`
  (the one document explains both the deprecation and the sunset).

The header values are computed once per app from the policy; per request the middleware only
compares the path with the deprecated prefixes. It is pure ASGI (no request or response
objects), so it costs one string comparison on every other path.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from email.utils import format_datetime
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reference_service.http import problems
from reference_service.policy import DeprecatedVersion, VersioningPolicy

API_ROOT: Final = "/api/"

RawHeaders = tuple[tuple[bytes, bytes], ...]


def prefix(version: str) -> str:
    return f"{API_ROOT}{version}"


def deprecation_headers(deprecated: DeprecatedVersion) -> dict[str, str]:
    """The headers of every response of a deprecated version."""
    headers = {
        "Deprecation": f"@{int(deprecated.deprecated_at.timestamp())}",
        # `usegmt` needs the datetime in UTC exactly, whatever offset the policy was written in.
        "Sunset": format_datetime(deprecated.sunset_at.astimezone(UTC), usegmt=True),
    }
    if deprecated.link is not None:
        headers["Link"] = (
            f'<{deprecated.link}>; rel="deprecation", <{deprecated.link}>; rel="sunset"'
        )
    return headers


def deprecated_versions(policy: VersioningPolicy) -> dict[str, DeprecatedVersion]:
    """Deprecated versions by name. The current version is never deprecated, whatever the
    list says: its clients have nowhere to move to."""
    return {d.version: d for d in policy.deprecated if d.version != policy.current}


class DeprecationMiddleware:
    """Adds the precomputed deprecation headers to responses under deprecated prefixes."""

    def __init__(self, app: ASGIApp, policy: VersioningPolicy) -> None:
        self.app = app
        self._by_prefix: Mapping[str, RawHeaders] = {
            prefix(version): tuple(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in deprecation_headers(deprecated).items()
            )
            for version, deprecated in deprecated_versions(policy).items()
        }

    def _headers_for(self, path: str) -> RawHeaders | None:
        if not path.startswith(API_ROOT):
            return None
        for version_prefix, headers in self._by_prefix.items():
            if path == version_prefix or path.startswith(version_prefix + "/"):
                return headers
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = self._headers_for(scope["path"]) if scope["type"] == "http" else None
        if headers is None:
            await self.app(scope, receive, send)
            return

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # Appended, never replacing: a list's `Link: rel="next"` stays a field of its own.
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            await problems.answer_unhandled(exc, scope, receive, send_with_headers, started=started)
