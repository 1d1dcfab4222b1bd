"""What the app factory opens at start-up and routes use: one typed place instead of
untyped `app.state` attributes scattered over the routes."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis

from reference_service.config import Settings
from reference_service.db.pool import Database
from reference_service.http.pagination import CursorCodec


@dataclass(frozen=True)
class Services:
    settings: Settings
    database: Database
    redis: Redis
    cursors: CursorCodec


def services(request: Request) -> Services:
    """FastAPI dependency: the services of the app serving `request`."""
    found: Services = request.app.state.services
    return found
