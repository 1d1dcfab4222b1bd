"""The operator's own sessions fit the reserve the connection budget keeps for it: at most
`PASSES_PER_SERVER` provisioning passes run against one server at once, the others wait their
turn (uncapped, 32 reconciles in flight held 64 sessions at start-up in bench/operator_scale.py)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from pathlib import Path
from typing import Any

import yaml

from adbm_operator import model, provisioning
from adbm_operator.database.target import admin_server
from tests.operator.database.conftest import admin_secret_data

EXAMPLE = Path(__file__).parents[3] / "examples" / "minimal.yaml"


def _object(n: int) -> model.BackendService:
    body: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    body["metadata"]["name"] = f"gate-{n}"
    body["spec"]["database"]["name"] = f"adbm_gate_{n}"
    return model.parse(body)


async def _connections(port: int) -> int:
    """Sessions the port has accepted and holds, read from the kernel (ss), not from us."""
    proc = await asyncio.create_subprocess_exec(
        "ss",
        "-Htn",
        "state",
        "established",
        f"( sport = :{port} )",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    return len([line for line in out.decode().splitlines() if line.strip()])


async def test_passes_against_one_server_are_capped(silent_port: int) -> None:
    # A server that accepts and never answers: each pass holds its first session until the
    # pass timeout, so the sessions open at once are exactly the passes running at once.
    url = f"postgresql://postgres:pw@127.0.0.1:{silent_port}/postgres"
    inputs = provisioning.Inputs(server=admin_server(admin_secret_data(url), "uri"), password="pw")
    passes = [
        asyncio.create_task(provisioning.run_pass(inputs, _object(n), migrated=False, timeout=30))
        for n in range(4 * provisioning.PASSES_PER_SERVER)
    ]
    try:
        async with asyncio.timeout(10):
            while await _connections(silent_port) < provisioning.PASSES_PER_SERVER:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # time for any pass the gate let through to connect
        assert await _connections(silent_port) == provisioning.PASSES_PER_SERVER
        assert not any(p.done() for p in passes)
    finally:
        for p in passes:
            p.cancel()
        for p in passes:
            with contextlib.suppress(asyncio.CancelledError):
                await p


def test_the_operators_sessions_fit_its_reserve() -> None:
    from adbm_operator.database.budget import OPERATOR_RESERVE

    used = provisioning.PASSES_PER_SERVER * provisioning.SESSIONS_PER_PASS
    assert used < OPERATOR_RESERVE, "the migration Job and a psql need room too"
