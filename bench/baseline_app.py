"""What a FastAPI user writes by hand: the baselines `service_load.py` serves next to the
service, with the same server (uvicorn) and settings.

Environment: `BENCH_DSN` (the scratch database, as its owner), `BENCH_REDIS_URL`.
Routes: `/json` (no I/O), `/select/{id}` (one primary-key SELECT from a psycopg pool, in the
default transaction: BEGIN, SELECT, COMMIT), `/limited/{id}` (the same behind slowapi with Redis
storage, as its documentation sets it up), `POST /insert` (one INSERT ... RETURNING).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

from fastapi import FastAPI, HTTPException, Request
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel
from slowapi import Limiter, _rate_limit_exceeded_handler
from slowapi.errors import RateLimitExceeded
from slowapi.util import get_remote_address

SELECT = "SELECT id, sku, name, price_minor, currency, version FROM public.products WHERE id = %s"
INSERT = (
    "INSERT INTO public.bench_inserts (sku, name, price_minor, currency)"
    " VALUES (%s, %s, %s, %s) RETURNING id, sku, name, price_minor, currency"
)
# High enough never to refuse: the benchmark measures the cost of deciding, not of refusing.
LIMIT = "100000000/second"


class Item(BaseModel):
    sku: str
    name: str
    price_minor: int
    currency: str


def create_app() -> FastAPI:
    pool = AsyncConnectionPool(os.environ["BENCH_DSN"], min_size=10, max_size=10, open=False)
    limiter = Limiter(key_func=get_remote_address, storage_uri=os.environ["BENCH_REDIS_URL"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await pool.open(wait=True)
        yield
        await pool.close()

    app = FastAPI(lifespan=lifespan)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]

    async def select(item_id: UUID) -> dict[str, Any]:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(SELECT, (item_id,))
            row = await cur.fetchone()
        if row is None:
            raise HTTPException(404)
        return row

    @app.get("/json")
    async def bare() -> dict[str, Any]:
        return {"id": "0190b3a0-0000-7000-8000-000000000000", "sku": "SKU-1", "price_minor": 1250}

    @app.get("/select/{item_id}")
    async def one_select(item_id: UUID) -> dict[str, Any]:
        return await select(item_id)

    @app.get("/limited/{item_id}")
    @limiter.limit(LIMIT)
    async def limited_select(request: Request, item_id: UUID) -> dict[str, Any]:
        return await select(item_id)

    @app.post("/insert", status_code=201)
    async def insert(item: Item) -> dict[str, Any]:
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(INSERT, (item.sku, item.name, item.price_minor, item.currency))
            row = await cur.fetchone()
        if row is None:
            raise HTTPException(500)
        return row

    return app
