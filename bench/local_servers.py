"""A dedicated PostgreSQL and Redis for one benchmark run, on free ports.

The shared servers on 5432/6379 carry the other engineers' tests, whose commands would land in
the counters (`INFO commandstats`, `pg_stat_statements`) a benchmark divides by its requests.
A private instance of each keeps those counters to the run's own traffic, and lets Postgres
load `pg_stat_statements` (a `shared_preload_libraries` change the shared server cannot take
without a restart).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

PG_BIN = Path(os.environ.get("BENCH_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Unavailable(RuntimeError):
    """A program the benchmark needs is missing or does not start; the message says why."""


def _run(args: list[str], what: str) -> None:
    try:
        subprocess.run(args, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise Unavailable(f"{what} failed: {detail[-1] if detail else exc}") from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@dataclass(frozen=True)
class Postgres:
    port: int
    data_dir: Path

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"


def _as_postgres_user(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextlib.contextmanager
def postgres(
    cpus: str | None = None, settings: Mapping[str, str] | None = None
) -> Iterator[Postgres]:
    """A fresh cluster (trust authentication on 127.0.0.1) with pg_stat_statements loaded;
    `settings` are further server settings (they override the ones here)."""
    if not (PG_BIN / "initdb").exists():
        raise Unavailable(
            f"no initdb in {PG_BIN} (apt-get install -y postgresql, or set BENCH_PG_BIN)"
        )
    base = Path(tempfile.mkdtemp(prefix="adbm-bench-pg-"))
    data, port = base / "data", free_port()
    pg_ctl = str(PG_BIN / "pg_ctl")
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base}"
        " -c shared_preload_libraries=pg_stat_statements -c max_connections=200"
    ) + "".join(f" -c {name}={value}" for name, value in (settings or {}).items())
    pin = ["taskset", "-c", cpus] if cpus else []
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(base, "postgres", "postgres")
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        _run(_as_postgres_user([*initdb, "-E", "UTF8"]), "initdb")
        log = str(base / "log")
        _run(
            _as_postgres_user(
                [*pin, pg_ctl, "-D", str(data), "-o", options, "-l", log, "-w", "start"]
            ),
            "pg_ctl start",
        )
        started = True
        yield Postgres(port, data)
    finally:
        if started:
            subprocess.run(
                _as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
            )
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class Redis:
    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@contextlib.contextmanager
def redis(cpus: str | None = None) -> Iterator[Redis]:
    """A redis-server without persistence, stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise Unavailable("no redis-server on PATH (apt-get install -y redis-server)")
    port = free_port()
    pin = ["taskset", "-c", cpus] if cpus else []
    proc = subprocess.Popen(
        [
            *pin,
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield Redis(port, proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)
