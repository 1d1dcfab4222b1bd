"""Provider side: every pact committed under `pacts/` for this provider, replayed against the
real service (uvicorn on a free port, a scratch PostgreSQL database, the real Redis), every
interaction verified.

The service runs from `provider_app.create`, the product app plus the provider-state route that
only tests have; the verifier calls that route before each interaction and injects the values it
returns (the tenant's API key, the ids) into the request.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pact import Verifier

from tests.contract import live
from tests.contract.conftest import GENEROUS_POLICY
from tests.contract.pact_files import PACT_DIR, provider_of
from tests.contract.provider_app import STATE_PATH
from tests.contract.test_pact_consumer import PROVIDER


def test_the_service_honours_every_interaction_of_its_pacts(tmp_path: Path) -> None:
    # Pacts of other providers (the worker's of the payment provider) are not this service's.
    ours = [p for p in sorted(PACT_DIR.glob("*.json")) if provider_of(p) == PROVIDER]
    assert ours, f"no pact for {PROVIDER} under {PACT_DIR}"
    port = live.free_port()
    argv = [sys.executable, "-m", "uvicorn", "tests.contract.provider_app:create", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    with live.serve(
        tmp_path / "provider.log", policy=GENEROUS_POLICY, argv=argv, admin=True, port=port
    ) as svc:
        verifier = (
            Verifier(PROVIDER, host="127.0.0.1")
            .add_transport(url=svc.url)
            .state_handler(f"{svc.url}{STATE_PATH}", body=True)
            .set_error_on_empty_pact(enabled=True)
        )
        for pact_file in ours:
            verifier.add_source(pact_file)
        try:
            verifier.verify()
        except Exception as exc:
            raise AssertionError(
                f"{exc}\n{verifier.output(strip_ansi=True)}\n{svc.process.output()[-3000:]}"
            ) from None
        results = verifier.results
        assert results["result"] is True, results
