"""The worker's probe and metrics endpoint: `/health`, `/ready` and `/metrics` on one port.

Workers have no HTTP API, so this is a minimal HTTP/1.1 responder on asyncio streams rather than
a web framework: one GET per connection, answered and closed, which is what kubelet probes and a
Prometheus scrape send.

- `/health`: 200 while the event loop runs (liveness: a wedged process stops answering).
- `/ready`: 200 when RabbitMQ is connected and Postgres answers a query, else 503 naming what
  is down. A worker that is not ready holds back a rollout (maxUnavailable 0).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[dict[str, str]]]
"""Returns the problems by component ({} when ready)."""

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HealthServer:
    def __init__(self, ready: ReadinessCheck, *, host: str, port: int) -> None:
        self._ready = ready
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, path, *_ = request.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            status, content_type, body = await self._respond(method, path.split("?", 1)[0])
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass  # not HTTP, or a client that went away: nothing to answer
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        if path == "/health":
            return 200, "application/json", b'{"status":"ok"}'
        if path == "/ready":
            problems = await self._ready()
            body = json.dumps({"status": "ready" if not problems else "not ready", **problems})
            return (503 if problems else 200), "application/json", body.encode()
        if path == "/metrics":
            # The text format every Prometheus parses (2.x knows no other version); the body
            # is that format, since the default `underscores` escaping keeps names legacy.
            return 200, CONTENT_TYPE_PLAIN_0_0_4, generate_latest(REGISTRY)
        return 404, "text/plain", b"not found\n"
