"""The typed client against the real service (a process on real PostgreSQL and Redis): typed
resources and problems, ETag-guarded changes, cursors followed to the end, one Idempotency-Key
per logical operation reused on retry, Retry-After honoured."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from adbm_client import (
    AdbmClient,
    Money,
    NotFound,
    PreconditionFailed,
    Problem,
    RateLimited,
    RetryPolicy,
    Unauthorized,
    ValidationFailed,
)
from adbm_client.problems import from_response, parse_retry_after
from tests.contract import live

EUR = Money(amount=1200, currency="EUR")


@pytest.fixture
def client(service: live.Service) -> Iterator[AdbmClient]:
    with AdbmClient(service.url, service.api_key) as c:
        yield c


def test_create_read_change_delete_a_product(client: AdbmClient) -> None:
    sku = f"MUG-{uuid.uuid4().hex[:8]}"
    created = client.create_product(sku, "Mug", EUR)
    assert (created.sku, created.price) == (sku, EUR)
    assert client.get_product(created.id) == created
    changed = client.update_product(created, name="Big mug")
    assert (changed.name, changed.version) == ("Big mug", created.version + 1)
    with pytest.raises(PreconditionFailed) as stale:
        client.update_product(created, name="Lost update")
    assert stale.value.status == 412
    assert stale.value.type == "https://adbm.io/problems/precondition-failed"
    client.delete_product(changed)
    with pytest.raises(NotFound):
        client.get_product(created.id)


def test_problems_are_typed(client: AdbmClient, service: live.Service) -> None:
    with pytest.raises(ValidationFailed) as invalid:
        client.create_product("", "Mug", EUR)
    assert invalid.value.errors and invalid.value.errors[0]["in"] == "body"
    with AdbmClient(service.url, "adbm_not-a-key") as stranger, pytest.raises(Unauthorized):
        stranger.get_product(uuid.uuid4())


def test_lists_follow_cursors_to_the_end(client: AdbmClient) -> None:
    names = {f"acct-{uuid.uuid4().hex[:6]}-{i}" for i in range(7)}
    for name in names:
        client.create_account(name, EUR)
    first = client.accounts_page(limit=3)
    assert len(first.items) == 3 and first.next is not None
    second = client.next_page(first)
    assert second is not None and len(second.items) == 3
    assert not {a.id for a in first.items} & {a.id for a in second.items}
    walked = [a.name for a in client.accounts(limit=3)]
    assert len(walked) == len(set(walked))
    assert names <= set(walked)


class LoseFirstAnswer(httpx.BaseTransport):
    """Delivers each request to the real server, but loses the first answer on the way back,
    as a dropped connection after the server committed would."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        response = self.inner.handle_request(request)
        if len(self.sent) == 1:
            response.read()
            response.close()
            raise httpx.ReadError(
                "connection lost after the request was processed", request=request
            )
        return response


def test_a_retried_create_reuses_its_key_and_creates_once(service: live.Service) -> None:
    transport = LoseFirstAnswer()
    sku = f"RETRY-{uuid.uuid4().hex[:8]}"
    waits: list[float] = []
    with AdbmClient(service.url, service.api_key, transport=transport, sleep=waits.append) as c:
        product = c.create_product(sku, "Retried", EUR)
        assert [p.sku for p in c.products()].count(sku) == 1
    first, second = transport.sent[:2]
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert waits == [RetryPolicy().backoff_seconds]
    assert product.sku == sku
    # A second logical operation gets a key of its own.
    with AdbmClient(service.url, service.api_key, transport=transport) as c:
        c.create_product(f"OTHER-{uuid.uuid4().hex[:8]}", "Other", EUR)
    assert transport.sent[-1].headers["Idempotency-Key"] != first.headers["Idempotency-Key"]


@pytest.fixture(scope="module")
def strict_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live.Service]:
    """One request per second, no burst: the second request of a second is refused."""
    policy = '{"rate_limit": {"default": {"requests": 1, "period_seconds": 1, "burst": 1}}}'
    with live.serve(tmp_path_factory.mktemp("strict") / "serve.log", policy=policy) as svc:
        yield svc


def test_429_is_retried_after_retry_after(strict_service: live.Service) -> None:
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    with AdbmClient(strict_service.url, strict_service.api_key, sleep=sleep) as c:
        c.products_page()
        c.products_page()  # refused at first, then served after the wait
    assert waits and all(0 < w <= 1 for w in waits)
    with (
        AdbmClient(strict_service.url, strict_service.api_key, retry=RetryPolicy(attempts=1)) as c,
        pytest.raises(RateLimited) as refused,
    ):
        c.products_page()
        c.products_page()
    assert refused.value.retry_after is not None


def test_a_retry_after_beyond_the_policy_is_raised_not_waited(
    strict_service: live.Service,
) -> None:
    waits: list[float] = []
    policy = RetryPolicy(max_wait_seconds=0)
    with (
        AdbmClient(
            strict_service.url, strict_service.api_key, retry=policy, sleep=waits.append
        ) as c,
        pytest.raises(RateLimited),
    ):
        c.products_page()
        c.products_page()
    assert waits == []


def test_retry_after_forms() -> None:
    assert parse_retry_after("3") == 3.0
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    seconds = parse_retry_after(later)
    assert seconds is not None and 100 < seconds <= 120
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_an_error_that_is_not_problem_json_is_still_a_problem() -> None:
    response = httpx.Response(
        502, text="<html>bad gateway</html>", request=httpx.Request("GET", "http://x/")
    )
    problem = from_response(response)
    assert type(problem) is Problem and problem.status == 502
