"""What `create_app` refuses: settings that must not serve (its lifespan, which uvicorn's
`--factory` path runs too), and a policy naming routes the service does not serve."""

from __future__ import annotations

import pytest

from reference_service.app import ServingRefused, create_app
from reference_service.config import Settings
from reference_service.policy import Policy, RateLimitPolicy, RouteQuota
from tests.reference_service.cli_process import run_cli
from tests.reference_service.conftest import DatabaseUrls


async def test_the_app_refuses_to_start_with_the_development_cursor_key() -> None:
    app = create_app(Settings(environment="production"))
    with pytest.raises(ServingRefused, match="ADBM_CURSOR_SECRET"):
        async with app.router.lifespan_context(app):
            pass


def test_the_development_key_is_fine_on_a_developer_machine() -> None:
    # Nothing to refuse: the lifespan would open the services (covered by every other test).
    from reference_service.config import serving_problems

    assert serving_problems(Settings(environment="development")) == []
    # Building the app (the OpenAPI document) never needs a secret.
    assert create_app(Settings(environment="production")).openapi()["paths"]


def _policy(*routes: RouteQuota) -> Policy:
    return Policy(rate_limit=RateLimitPolicy(routes=list(routes)))


def test_an_override_for_a_route_not_served_is_refused() -> None:
    settings = Settings(
        policy=_policy(
            RouteQuota(method="GET", path="/api/v2/products/{product_id}"),
            RouteQuota(method="POST", path="/api/v2/products/{product_id}"),
            RouteQuota(method="*", path="/api/v2/product"),
        )
    )
    with pytest.raises(ServingRefused) as refused:
        create_app(settings)
    message = str(refused.value)
    assert "\n" not in message
    assert "rate_limit.routes[1]: the service has no route POST /api/v2/products/{product_id}" in (
        message
    )
    assert "rate_limit.routes[2]: the service has no route * /api/v2/product " in message
    assert "routes[0]" not in message


def test_overrides_for_served_routes_are_accepted() -> None:
    create_app(
        Settings(
            policy=_policy(
                RouteQuota(method="PATCH", path="/api/v1/accounts/{account_id}"),
                RouteQuota(method="*", path="/api/v2/products"),
            )
        )
    )


def test_serve_and_openapi_refuse_an_unknown_route_in_one_line(
    database_urls: DatabaseUrls,
) -> None:
    policy = _policy(RouteQuota(method="GET", path="/api/v9/nothing")).model_dump_json()
    for command in (["openapi"], ["serve"]):
        env = {
            "ADBM_POLICY": policy,
            "ADBM_ENVIRONMENT": "development",
            "ADBM_DATABASE_URL": database_urls.app_url,
        }
        result = run_cli(*command, **env)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines == [
            "error: ADBM_POLICY: rate_limit.routes[0]: the service has no route GET "
            "/api/v9/nothing (write the route template, e.g. /api/v2/products/{product_id})"
        ], result.stderr
