"""Records the API calls the operator makes in every emulator test, for the RBAC proof.

Each `AdbmEmulator` collects the requests that carry credentials (the operator's); this plugin
keeps them per test, so tests/operator/test_rbac.py can compare what the whole emulator suite
used with what the Helm chart grants. The proof runs after every other test of the session.
With `ADBM_API_CALLS_FILE` set, the calls are also written there as JSON when the session ends
(the proof runs the suite that way when this session did not run all of it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.operator.emulator import AdbmEmulator, ApiCall

CALLS_FILE_ENV = "ADBM_API_CALLS_FILE"
PROOF_MARK = "after_emulator_suite"


class Recording:
    """What this session ran of the emulator suite, and the calls each test made."""

    def __init__(self) -> None:
        self.calls: dict[str, set[ApiCall]] = {}
        self.collected: set[str] = set()
        self.deselected: set[str] = set()

    def complete(self, modules: list[str]) -> bool:
        """Whether every test of these modules (paths relative to the root) was selected."""
        for module in modules:
            selected = {n for n in self.collected if n.split("::")[0] == module}
            if not selected or any(n.split("::")[0] == module for n in self.deselected):
                return False
        return True


RECORDING = Recording()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{PROOF_MARK}: runs after every other test (needs the calls they recorded)"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    RECORDING.collected.update(item.nodeid for item in items)
    # The proof last: it reads what the rest of the session recorded.
    items.sort(key=lambda item: item.get_closest_marker(PROOF_MARK) is not None)


def pytest_deselected(items: list[pytest.Item]) -> None:
    RECORDING.deselected.update(item.nodeid for item in items)


@pytest.fixture(autouse=True)
def _record_api_calls(request: pytest.FixtureRequest) -> Iterator[None]:
    if "kmock" not in request.fixturenames:
        yield
        return
    emulator = request.getfixturevalue("kmock")
    yield
    if isinstance(emulator, AdbmEmulator) and emulator.api_calls:
        RECORDING.calls[request.node.nodeid] = set(emulator.api_calls)


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(CALLS_FILE_ENV)
    if target:
        dump = {test: sorted(calls, key=str) for test, calls in RECORDING.calls.items()}
        Path(target).write_text(json.dumps(dump), encoding="utf-8")
