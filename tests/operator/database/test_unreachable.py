"""An unreachable server or refused credentials give a clean Unreachable result: one line that
names the target and not the password, no exception, and a bounded wait."""

from __future__ import annotations

import socket
from collections.abc import Callable

from adbm_operator.database.provision import Desired, provision
from adbm_operator.database.target import admin_server
from tests.operator.database.conftest import admin_secret_data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_nothing_listening_is_unreachable(desired: Callable[..., Desired]) -> None:
    port = _free_port()
    url = f"postgresql://postgres:s3cret-word@127.0.0.1:{port}/*"
    report = await provision(admin_server(admin_secret_data(url), "uri"), desired())
    status, reason, message = report.condition()
    assert (status, reason) == ("False", "Unreachable")
    assert message.startswith(f"cannot connect to postgres@127.0.0.1:{port}/postgres: ")
    assert "\n" not in message and "s3cret-word" not in message
    assert report.changes == ()


async def test_an_unknown_admin_role_is_unreachable(desired: Callable[..., Desired]) -> None:
    url = "postgresql://adbm_no_such_admin:pw@127.0.0.1:5432/postgres"
    report = await provision(admin_server(admin_secret_data(url), "uri"), desired())
    status, reason, message = report.condition()
    assert (status, reason) == ("False", "Unreachable")
    assert 'role "adbm_no_such_admin" does not exist' in message


async def test_a_server_that_never_answers_is_given_up_on(
    silent_port: int, desired: Callable[..., Desired]
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{silent_port}/postgres?connect_timeout=60"
    server = admin_server(admin_secret_data(url), "uri")
    # The Secret's 60 s is capped by the provisioner's own bound.
    assert "connect_timeout=2" in server.conninfo("x", timeout=2)
    report = await provision(server, desired(timeout=2))
    status, reason, message = report.condition()
    assert (status, reason) == ("False", "Unreachable")
    assert message.startswith(f"cannot connect to postgres@127.0.0.1:{silent_port}/postgres")
