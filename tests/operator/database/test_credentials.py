"""Passwords, against a dedicated PostgreSQL that checks them (the shared test server trusts
every local connection): wrong admin credentials are a clean Unreachable, and an app role whose
password drifted from its Secret gets the Secret's password back."""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from adbm_operator.database.provision import Desired, provision
from adbm_operator.database.target import Server, admin_server
from reference_service.db.migrate import migrate
from tests.operator.database.conftest import Scratch, admin_secret_data

ADMIN_PASSWORD = "adbm-dedicated-admin"


def _bindir() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        pytest.fail("these tests need the PostgreSQL server binaries (initdb, pg_ctl)")
    return Path(candidates[-1]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def scram_url() -> Iterator[str]:
    """A throwaway server on a free port that requires SCRAM passwords for every login."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="adbm-scram-"))
    # initdb refuses to run as root: run the server as the postgres user then.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    (root / "pw").write_text(ADMIN_PASSWORD)
    data, port = root / "data", _free_port()
    subprocess.run(
        [
            *as_user,
            bindir / "initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "-A",
            "scram-sha-256",
            f"--pwfile={root / 'pw'}",
        ],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root}"
    pg_ctl = [*as_user, bindir / "pg_ctl", "-D", data, "-s"]
    subprocess.run([*pg_ctl, "-w", "-o", options, "-l", root / "log", "start"], check=True)
    try:
        yield f"postgresql://postgres:{ADMIN_PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], check=False)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def scram_server(scram_url: str) -> Server:
    return admin_server(admin_secret_data(scram_url), "uri")


async def test_a_wrong_admin_password_is_unreachable_and_not_repeated(
    scram_url: str, desired: Callable[..., Desired]
) -> None:
    wrong = scram_url.replace(ADMIN_PASSWORD, "not-the-password")
    report = await provision(admin_server(admin_secret_data(wrong), "uri"), desired())
    status, reason, message = report.condition()
    assert (status, reason) == ("False", "Unreachable")
    assert 'password authentication failed for user "postgres"' in message
    assert "not-the-password" not in message and "\n" not in message


async def test_an_app_password_changed_behind_adbm_is_set_back(
    scram_server: Server, scram_url: str, desired: Callable[..., Desired], scratch: Scratch
) -> None:
    wanted = desired()
    await provision(scram_server, dataclasses.replace(wanted, migrated=False))
    admin = scram_server.conninfo(scratch.database)
    try:
        await migrate(admin, app_role=scratch.role)
        assert (await provision(scram_server, wanted)).condition()[0] == "True"
        async with await psycopg.AsyncConnection.connect(admin, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD 'changed-by-hand'").format(
                    sql.Identifier(scratch.role)
                )
            )
        report = await provision(scram_server, wanted)
        assert report.condition()[:2] == ("True", "Provisioned"), report.condition()
        assert f"set the password of role {scratch.role} to the one in its Secret" in (
            report.changes
        )
        assert scratch.password not in str(report)
    finally:
        async with await psycopg.AsyncConnection.connect(
            scram_server.conninfo("postgres"), autocommit=True
        ) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(scratch.database)
                )
            )
            await conn.execute(
                sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(scratch.role))
            )
