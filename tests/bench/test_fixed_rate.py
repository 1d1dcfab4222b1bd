"""The open-loop client keeps to its connection bound when the server falls behind, and still
counts each request's wait from its scheduled start."""

from __future__ import annotations

import asyncio

from bench import fixed_rate


async def _slow_server(delay: float) -> tuple[asyncio.Server, list[int]]:
    accepted: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(delay)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, accepted


async def test_a_server_behind_gets_no_more_connections_than_the_bound() -> None:
    # 4 connections of 50 ms each serve 80 requests a second; 200 a second are offered.
    server, accepted = await _slow_server(0.05)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await fixed_rate.run(f"http://127.0.0.1:{port}/", 200, 0.5, [], connections=4)
    assert result["connections"] == 4
    assert len(accepted) == 4
    assert result["completed"] == result["sent"] == 100
    assert result["failures"] == 0
    # The last of 100 requests, 25 rounds of 50 ms behind 4 connections, waited far longer
    # than one service time: the queueing is in the latency, not hidden by the bound.
    assert result["p99_ms"] > 500


async def test_a_failed_connection_frees_its_slot() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        result = await fixed_rate.run(f"http://127.0.0.1:{port}/", 100, 0.1, [], connections=2)
    assert result["failures"] == result["sent"] == 10
    assert result["connections"] == 10
