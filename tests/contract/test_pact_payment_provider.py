"""The worker's pact of the payment provider, verified against the fake the saga's tests use.

There is no real payment provider here: the saga's tests (`tests/reference_service/domain/`,
`messaging/`) run against `tests/reference_service/payment_provider.py`. Verifying the pact
against that fake keeps both sides honest: the fake answers what the contract says a provider
answers, and the client's expectations are ones a provider can meet. Provider states are set by
a hook on the fake itself (the verifier calls `set_state` before each interaction).
"""

from __future__ import annotations

from typing import Any, Literal

from pact import Verifier

from tests.contract.pact_files import PACT_DIR, provider_of
from tests.contract.test_pact_payment_consumer import PROVIDER
from tests.reference_service import payment_provider
from tests.reference_service.payment_provider import Provider

# What a state's charge costs; any amount the fake charges (see its docstring) would do.
CHARGE_AMOUNT = 1200


def set_state(provider: Provider, state: str, parameters: dict[str, Any] | None) -> None:
    """Bring the fake into `state`, from scratch each time (no interaction sees another's)."""
    provider.reset()
    params = parameters or {}
    if state in ("", "no charge under the key"):
        return
    if state == "the card declines":
        # The fake declines by amount (last digit DECLINE): the interaction's amount is one.
        return
    key = str(params["key"])
    if state == "a charge under the key":
        assert provider.record_charge(key, CHARGE_AMOUNT) is not None
    elif state == "the key was voided by a refund":
        provider.void(key)
    else:
        raise LookupError(f"unknown provider state {state!r}")


def test_the_fake_payment_provider_honours_the_workers_pact() -> None:
    pacts = [p for p in sorted(PACT_DIR.glob("*.json")) if provider_of(p) == PROVIDER]
    assert pacts, f"no pact for {PROVIDER} under {PACT_DIR}"
    with payment_provider.serve() as (provider, url):

        def state(
            state: str, action: Literal["setup", "teardown"], parameters: dict[str, Any] | None
        ) -> None:
            if action == "setup":
                set_state(provider, state, parameters)

        verifier = (
            Verifier(PROVIDER, host="127.0.0.1")
            .add_transport(url=url)
            .state_handler(state, teardown=True)
            .set_error_on_empty_pact(enabled=True)
        )
        for pact in pacts:
            verifier.add_source(pact)
        try:
            verifier.verify()
        except Exception as exc:
            raise AssertionError(f"{exc}\n{verifier.output(strip_ansi=True)}") from None
        assert verifier.results["result"] is True, verifier.results
