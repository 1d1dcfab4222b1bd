"""API version deprecation, from `settings.policy.versioning`.

Every response under a deprecated version's prefix (`/api/<version>`), errors included, carries

- `Deprecation: @<unix seconds>` (RFC 9745: a structured-field date),
- `Sunset: <HTTP-date>` (RFC 8594), and
- when the policy names a link, `Link: <link>; rel="deprecation", <link>; rel="sunset"`
  (the one document explains both the deprecation and the sunset).

From `sunset_at` on, a version whose `after_sunset` is `Gone` (the default) answers every
request under its prefix with a 410 `gone` problem, before authentication or any other work,
with the same headers and `Link: </api/<current>>; rel="successor-version"` (RFC 5829);
`Serve` keeps serving it. The clock is read per request, so the switch needs no restart.

The header values are computed once per app from the policy; per request the middleware only
compares the path with the deprecated prefixes. It is pure ASGI (no request or response
objects), so it costs one string comparison on every other path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC
from email.utils import format_datetime
from typing import Final

from starlette.requests import Request
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


def successor_link(policy: VersioningPolicy) -> str:
    """The `Link` to the version that replaces a deprecated one: the current one."""
    return f'<{prefix(policy.current)}>; rel="successor-version"'


def may_be_gone(policy: VersioningPolicy, version: str) -> bool:
    """Whether `version` answers 410 once past its sunset (for the OpenAPI document)."""
    deprecated = deprecated_versions(policy).get(version)
    return deprecated is not None and deprecated.after_sunset == "Gone"


def deprecated_versions(policy: VersioningPolicy) -> dict[str, DeprecatedVersion]:
    """Deprecated versions by name. The current version is never deprecated, whatever the
    list says: its clients have nowhere to move to."""
    return {d.version: d for d in policy.deprecated if d.version != policy.current}


class DeprecationMiddleware:
    """Adds the precomputed deprecation headers to responses under deprecated prefixes, and
    answers 410 under those past their sunset that are not kept served."""

    def __init__(self, app: ASGIApp, policy: VersioningPolicy) -> None:
        self.app = app
        versions = deprecated_versions(policy)
        self._by_prefix: Mapping[str, RawHeaders] = {
            prefix(version): tuple(
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in deprecation_headers(deprecated).items()
            )
            for version, deprecated in versions.items()
        }
        # Unix time from which each prefix is gone; absent where the policy keeps serving.
        self._gone_from: Mapping[str, float] = {
            prefix(version): deprecated.sunset_at.timestamp()
            for version, deprecated in versions.items()
            if deprecated.after_sunset == "Gone"
        }
        self._successor = successor_link(policy)

    def _prefix_of(self, path: str) -> str | None:
        if not path.startswith(API_ROOT):
            return None
        for version_prefix in self._by_prefix:
            if path == version_prefix or path.startswith(version_prefix + "/"):
                return version_prefix
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        version_prefix = self._prefix_of(scope["path"]) if scope["type"] == "http" else None
        if version_prefix is None:
            await self.app(scope, receive, send)
            return
        headers = self._by_prefix[version_prefix]

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                # Appended, never replacing: a list's `Link: rel="next"` stays a field of its own.
                message = {**message, "headers": [*message.get("headers", ()), *headers]}
            await send(message)

        gone_from = self._gone_from.get(version_prefix)
        if gone_from is not None and time.time() >= gone_from:
            version = version_prefix.removeprefix(API_ROOT)
            response = problems.problem_response(
                Request(scope),
                problems.GONE,
                f"API version {version} was retired at its sunset; use the successor version.",
                headers={"Link": self._successor},
            )
            await response(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            await problems.answer_unhandled(exc, scope, receive, send_with_headers, started=started)
