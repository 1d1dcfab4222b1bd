"""Bounded request bodies: a body over `max_body_bytes` is a 413 problem, never read whole.

A pure ASGI middleware, so it costs one header lookup on requests that stay within bounds. A
declared `Content-Length` over the limit is refused before the app runs; a chunked body is
counted as it streams: past the limit the app is told the client went away, and the 413 is
sent instead of anything the app answers.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reference_service.http.problems import PAYLOAD_TOO_LARGE, problem_response


def _detail(limit: int) -> str:
    return f"The request body exceeds {limit} bytes."


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.max_bytes:
                    response = problem_response(
                        Request(scope), PAYLOAD_TOO_LARGE, _detail(self.max_bytes)
                    )
                    await response(scope, receive, send)
                    return
                break
        seen = 0
        too_large = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # The app sees the client go away and stops reading; the 413 is ours.
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # whatever the app says about a body it never got is not sent
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            response = problem_response(Request(scope), PAYLOAD_TOO_LARGE, _detail(self.max_bytes))
            await response(scope, receive, send)
