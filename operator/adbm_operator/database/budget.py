"""The connection budget: what the BackendService may open must fit what the server allows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

OPERATOR_RESERVE = 10
"""Connections left for the operator's own provisioning (at most 6: `provisioning.PASSES_PER_SERVER`
passes of 2 sessions), the migration Job and a person's psql."""


@dataclass(frozen=True)
class Budget:
    max_connections: int
    """The server's `max_connections`."""
    reserved: int
    """Slots only superusers (and PG16's pg_use_reserved_connections) may use, plus our reserve."""
    wanted: int
    """What the spec can open at its autoscaling maximum (pods times pool.maxSize)."""

    @property
    def available(self) -> int:
        return max(self.max_connections - self.reserved, 0)

    @property
    def fits(self) -> bool:
        return self.wanted <= self.available

    def message(self) -> str:
        verdict = "fit in" if self.fits else "exceed"
        return (
            f"{self.wanted} connections at the autoscaling maximum {verdict} the"
            f" {self.available} the server allows (max_connections {self.max_connections}"
            f" minus {self.reserved} reserved)"
        )


async def read_budget(
    conn: psycopg.AsyncConnection[Any], wanted: int, reserve: int = OPERATOR_RESERVE
) -> Budget:
    """The budget as the server is configured (reserved_connections exists from PostgreSQL 16)."""
    cur = await conn.execute(
        "SELECT current_setting('max_connections')::int,"
        " current_setting('superuser_reserved_connections')::int,"
        " COALESCE(NULLIF(current_setting('reserved_connections', true), ''), '0')::int"
    )
    row = await cur.fetchone()
    assert row is not None
    return Budget(max_connections=row[0], reserved=row[1] + row[2] + reserve, wanted=wanted)
