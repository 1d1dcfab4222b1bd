"""The policy document: HTTP-contract settings the operator renders for the service.

It is the versioned contract between the two products. The operator fills it from a
BackendService and renders it as JSON into the service's ConfigMap (`ADBM_POLICY`); the service
validates it at start-up with these models and refuses to start on a document it does not know.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

POLICY_VERSION = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quota(_Strict):
    """`requests` per `period_seconds`, with up to `burst` admitted back to back."""

    requests: Annotated[int, Field(ge=1)] = 100
    period_seconds: Annotated[int, Field(ge=1)] = 1
    burst: Annotated[int, Field(ge=1)] = 50


class RouteQuota(Quota):
    method: Literal["*", "GET", "POST", "PUT", "PATCH", "DELETE"] = "*"
    path: str


class RateLimitPolicy(_Strict):
    algorithm: Literal["GCRA", "TokenBucket"] = "GCRA"
    scope: Literal["Tenant", "ApiKey"] = "Tenant"
    on_redis_unavailable: Literal["FailOpen", "FailClosed"] = "FailOpen"
    default: Quota = Quota()
    routes: list[RouteQuota] = []
    # Per client address, for requests without a valid API key, before the key is looked up.
    unauthenticated: Quota = Quota(requests=10, period_seconds=1, burst=20)


class DeprecatedVersion(_Strict):
    version: str
    deprecated_at: AwareDatetime
    sunset_at: AwareDatetime
    link: str | None = None
    # From `sunset_at` on: `Gone` answers every route of the version with 410, `Serve` keeps
    # serving it (with the same deprecation headers).
    after_sunset: Literal["Gone", "Serve"] = "Gone"


class VersioningPolicy(_Strict):
    current: str = "v2"
    deprecated: list[DeprecatedVersion] = []


class IdempotencyPolicy(_Strict):
    ttl_seconds: Annotated[int, Field(ge=1)] = 86_400


class Policy(_Strict):
    """The whole document; `version` changes only with an incompatible layout."""

    version: Literal[1] = 1
    rate_limit: RateLimitPolicy = RateLimitPolicy()
    versioning: VersioningPolicy = VersioningPolicy()
    idempotency: IdempotencyPolicy = IdempotencyPolicy()
