"""The real service as a process, on real dependencies: a scratch database with its own app
role, migrated by `adbm-service migrate`; a process on free ports, stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.reference_service.conftest import (
    DatabaseUrls,
    conninfo,
    create_scratch_database,
    drop_scratch,
)

BIN = Path(sys.executable).parent
APP_PASSWORD = "contract-app-password"
REDIS_URL = os.environ.get("ADBM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("ADBM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
# How long a process gets to start listening; the machine is shared and may be slow.
START_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def interpreter_env() -> dict[str, str]:
    """PATH, and PYTHONPATH when the tests run with one: where the image would have the
    service installed, so a child imports the same tree as the tests (not part of any pod)."""
    out = {"PATH": f"{BIN}:{os.environ['PATH']}"}
    if "PYTHONPATH" in os.environ:
        out["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return out


def run(args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """A command with exactly `env` (plus PATH), as a container gets it; fails loudly."""
    result = subprocess.run(
        args,
        env={**interpreter_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{args}: {result.returncode}\n{result.stdout}{result.stderr}"
    return result


@contextmanager
def scratch_database(tenant_setting: str = "app.tenant_id") -> Iterator[DatabaseUrls]:
    """A new database and app role, migrated by the service's own CLI, dropped afterwards."""
    suffix = uuid.uuid4().hex
    name, role = f"adbm_contract_{suffix}", f"adbm_app_{suffix}"
    asyncio.run(create_scratch_database(name))
    try:
        urls = DatabaseUrls(
            admin_url=conninfo(name),
            app_url=conninfo(name, user=role, password=APP_PASSWORD),
            app_role=role,
            name=name,
        )
        run(
            ["adbm-service", "migrate"],
            {
                "ADBM_DATABASE_URL": urls.app_url,
                "ADBM_ADMIN_DATABASE_URL": urls.admin_url,
                "ADBM_DB_TENANT_SETTING": tenant_setting,
            },
        )
        yield urls
    finally:
        asyncio.run(drop_scratch(name, [role]))


def issue_key(urls: DatabaseUrls, tenant: str) -> str:
    """A tenant and an API key for it, made with the admin commands; returns the key."""
    env = {"ADBM_DATABASE_URL": urls.app_url, "ADBM_ADMIN_DATABASE_URL": urls.admin_url}
    run(["adbm-service", "tenants", "create", tenant], env)
    return run(["adbm-service", "keys", "create", "--tenant", tenant], env).stdout.strip()


@dataclass
class Process:
    popen: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, as the kubelet sends; SIGKILL if it has not exited after its grace."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


@contextmanager
def process(args: list[str], env: Mapping[str, str], log: Path) -> Iterator[Process]:
    with log.open("w") as out:
        popen = subprocess.Popen(
            args,
            env={**interpreter_env(), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    proc = Process(popen, log)
    try:
        yield proc
    finally:
        proc.stop()


def wait_listening(proc: Process, url: str) -> None:
    """Until `url` answers at all (any status); fails with the process's output if it exits."""
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise AssertionError(f"exited with {proc.popen.returncode}:\n{proc.output()}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"nothing answered {url} within {START_SECONDS} s:\n{proc.output()}")


@dataclass(frozen=True)
class Service:
    url: str
    urls: DatabaseUrls
    api_key: str
    process: Process


def service_env(urls: DatabaseUrls, port: int, policy: str | None = None) -> dict[str, str]:
    env = {
        "ADBM_DATABASE_URL": urls.app_url,
        "ADBM_REDIS_URL": REDIS_URL,
        "ADBM_REDIS_KEY_PREFIX": f"contract-{uuid.uuid4().hex}:",
        "ADBM_CURSOR_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "ADBM_HTTP_PORT": str(port),
        # The metrics listener binds a port of its own: a fixed one collides between processes.
        "ADBM_METRICS_PORT": str(free_port()),
        "ADBM_QUEUE_ENABLED": "false",
        "ADBM_LOG_LEVEL": "WARNING",
        "OTEL_TRACES_EXPORTER": "none",
    }
    if policy is not None:
        env["ADBM_POLICY"] = policy
    return env


@contextmanager
def serve(
    log: Path,
    *,
    policy: str | None = None,
    argv: list[str] | None = None,
    admin: bool = False,
    port: int | None = None,
) -> Iterator[Service]:
    """`adbm-service serve` (or `argv`, which must listen on ADBM_HTTP_PORT) on a scratch
    database with one tenant (`tenant-a`) and its API key."""
    with scratch_database() as urls:
        key = issue_key(urls, "tenant-a")
        port = port or free_port()
        env = service_env(urls, port, policy)
        if admin:  # only a test-only app (the Pact provider states) may be given the admin
            env["ADBM_ADMIN_DATABASE_URL"] = urls.admin_url
        with process(argv or ["adbm-service", "serve", "--host", "127.0.0.1"], env, log) as proc:
            url = f"http://127.0.0.1:{port}"
            wait_listening(proc, f"{url}/health")
            yield Service(url, urls, key, proc)
