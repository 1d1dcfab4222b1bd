"""Consumer side of the Pact between the worker and the payment provider: each test drives the
order saga's real payment client (`reference_service.domain.sagas.payments.PaymentProvider`,
built as `messaging.worker` builds it) against Pact's mock server, which records what the
client sends and which parts of each answer it relies on.

The pact must reproduce the committed `pacts/adbm-worker-payment-provider.json` (see
`pact_files`). No real provider runs here; `test_pact_payment_provider.py` verifies the pact
against the test fake (`tests/reference_service/payment_provider.py`) that the saga's tests use,
so the fake cannot drift from the contract. A provider team would verify the same file.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pact import Pact, match

from reference_service.config import Settings
from reference_service.domain.sagas.payments import Outcome, PaymentProvider, Result
from tests.contract.pact_files import pact_file, reproduced

CONSUMER = "adbm-worker"
PROVIDER = "payment-provider"
PACT_FILE = pact_file(CONSUMER, PROVIDER)

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# The saga's id is the Idempotency-Key of its charge and of its refund; the order is the charge's
# reference.
SAGA_ID = uuid.UUID("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b")
ORDER_ID = uuid.UUID("0190a1b2-0000-7e5f-8a9b-0c1d2e3f4a5b")
CHARGED = 1200
# An amount a test provider declines: the fake declines amounts ending in 1, a real provider's
# sandbox has test cards for it. The provider state says what the interaction needs.
DECLINED = 1201


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with reproduced(tmp_path_factory.mktemp("pacts"), PACT_FILE) as out:
        yield out


@pytest.fixture
def pact(written: Path) -> Iterator[Pact]:
    pact = Pact(CONSUMER, PROVIDER).with_specification("V4")
    yield pact
    pact.write_file(written)


async def _against(pact: Pact, call: Callable[[PaymentProvider], Awaitable[Result]]) -> Result:
    """`call` with the worker's client against the pact's mock provider, then the client closed."""
    with pact.serve() as server:
        client = _client(server.url)
        try:
            return await call(client)
        finally:
            await client.aclose()


def _charge(client: PaymentProvider, amount_minor: int = CHARGED) -> Awaitable[Result]:
    return client.charge(SAGA_ID, amount_minor=amount_minor, currency="EUR", reference=ORDER_ID)


def _client(url: object) -> PaymentProvider:
    """The client as the worker builds it (`messaging.worker.run`), pointed at the mock."""
    settings = Settings(payment_provider_url=str(url))
    return PaymentProvider(
        settings.payment_provider_url,
        connect_timeout=settings.payment_connect_timeout_seconds,
        timeout=settings.payment_timeout_seconds,
    )


def _key() -> Any:
    return match.regex(str(SAGA_ID), regex=UUID_RE)


def _charge_request(pact: Pact, description: str, state: str, amount: int) -> Any:
    return (
        pact.upon_receiving(description)
        .given(state, key=str(SAGA_ID))
        .with_request("POST", "/charges")
        .with_header("Idempotency-Key", _key())
        .with_body(
            {
                "amount_minor": match.int(amount),
                "currency": match.regex("EUR", regex=r"[A-Z]{3}"),
                "reference": match.regex(str(ORDER_ID), regex=UUID_RE),
            },
            "application/json",
        )
    )


def _refund_request(pact: Pact, description: str, state: str) -> Any:
    return (
        pact.upon_receiving(description)
        .given(state, key=str(SAGA_ID))
        .with_request("POST", "/refunds")
        .with_header("Idempotency-Key", _key())
        .with_body({"charge_key": match.regex(str(SAGA_ID), regex=UUID_RE)}, "application/json")
    )


async def test_a_new_charge(pact: Pact) -> None:
    (
        _charge_request(pact, "a charge", "no charge under the key", CHARGED)
        .will_respond_with(201)
        .with_body({"id": match.str("ch_0123456789ab")}, "application/json")
    )
    result = await _against(pact, _charge)
    assert (result.outcome, result.charge_id) == (Outcome.SUCCEEDED, "ch_0123456789ab")


async def test_a_charge_retried_under_its_key_is_not_made_twice(pact: Pact) -> None:
    (
        _charge_request(
            pact, "a charge retried under the same key", "a charge under the key", CHARGED
        )
        .will_respond_with(200)
        .with_body({"id": match.str("ch_0123456789ab")}, "application/json")
    )
    result = await _against(pact, _charge)
    assert (result.outcome, result.charge_id) == (Outcome.SUCCEEDED, "ch_0123456789ab")


async def test_a_declined_charge(pact: Pact) -> None:
    (
        _charge_request(pact, "a charge the card declines", "the card declines", DECLINED)
        .will_respond_with(402)
        .with_body({"error": match.str("card_declined")}, "application/json")
    )
    result = await _against(pact, lambda client: _charge(client, DECLINED))
    assert result.outcome is Outcome.DECLINED


async def test_a_charge_under_a_voided_key_is_declined(pact: Pact) -> None:
    # A charge that arrives after the compensation's refund voided its key (the saga gave up
    # waiting, refunded, and the first charge request was still on its way) must not charge.
    (
        _charge_request(
            pact, "a charge under a key a refund voided", "the key was voided by a refund", CHARGED
        )
        .will_respond_with(402)
        .with_body({"error": match.str("voided")}, "application/json")
    )
    result = await _against(pact, _charge)
    assert result.outcome is Outcome.DECLINED


async def test_a_refund_of_a_charge(pact: Pact) -> None:
    (
        _refund_request(pact, "a refund of a charge", "a charge under the key")
        .will_respond_with(200)
        .with_body({"status": match.str("refunded")}, "application/json")
    )
    result = await _against(pact, lambda client: client.refund(SAGA_ID))
    assert result.outcome is Outcome.SUCCEEDED


async def test_a_refund_before_any_charge_voids_the_key(pact: Pact) -> None:
    (
        _refund_request(pact, "a refund under a key never charged", "no charge under the key")
        .will_respond_with(200)
        .with_body({"status": match.str("voided")}, "application/json")
    )
    result = await _against(pact, lambda client: client.refund(SAGA_ID))
    assert result.outcome is Outcome.SUCCEEDED
