"""Running `wrk` (Debian package `wrk`) with a case's Lua script and reading its report line."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.local_servers import Unavailable

SCRIPTS = Path(__file__).parent / "wrk"


def require_wrk() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise Unavailable("wrk is not installed: apt-get install -y wrk (Debian package 'wrk')")
    return binary


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def script(case_script: str) -> Path:
    """The case's Lua script with the report appended, as a temporary file."""
    text = (SCRIPTS / case_script).read_text() + "\n" + (SCRIPTS / "report.lua").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as out:
        out.write(text)
    return Path(out.name)


def run(
    url: str,
    *,
    lua: Path,
    seconds: float,
    connections: int,
    headers: Sequence[str] = (),
    args: Sequence[str] = (),
    cpus: str | None = None,
) -> WrkResult:
    pin = ["taskset", "-c", cpus] if cpus else []
    command = [
        *pin,
        require_wrk(),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(lua),
    ]
    for header in headers:
        command += ["-H", header]
    command.append(url)
    if args:
        command += ["--", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH "):
            r = json.loads(line[6:])
            return WrkResult(
                requests=r["requests"],
                seconds=r["duration_us"] / 1e6,
                non2xx=r["non2xx"],
                socket_errors=r["socket_errors"],
                p50_ms=r["p50_us"] / 1000,
                p95_ms=r["p95_us"] / 1000,
                p99_ms=r["p99_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no report (exit {done.returncode}): {done.stderr.strip()}")
