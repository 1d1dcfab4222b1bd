"""Opening connections with a bounded wait, and turning failures into one clean message."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from adbm_operator.database.target import CONNECT_TIMEOUT_SECONDS


class Unreachable(Exception):
    """The server could not be reached or refused the credentials. The message names the
    target (never a password) and what went wrong, on one line."""


async def connect(
    conninfo: str, what: str, *, timeout: float = CONNECT_TIMEOUT_SECONDS
) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection, or Unreachable within about `timeout` seconds.

    libpq's connect_timeout bounds each address it tries; the outer wait also bounds name
    resolution and several addresses, so a black-holed host never stalls a reconcile.
    """
    try:
        return await asyncio.wait_for(
            psycopg.AsyncConnection.connect(conninfo, autocommit=True), timeout + 1
        )
    except TimeoutError:
        raise Unreachable(f"cannot connect to {what}: no answer within {timeout:g} s") from None
    except psycopg.OperationalError as exc:
        raise Unreachable(f"cannot connect to {what}: {one_line(exc)}") from None


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (libpq adds detail lines and trailing newlines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
