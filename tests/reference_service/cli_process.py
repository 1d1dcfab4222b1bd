"""`adbm-service` run as a user runs it: a separate process, its output and exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXECUTABLE = Path(sys.executable).parent / "adbm-service"


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `adbm-service ARGS` with the test process's environment plus `env`, minus any
    ADBM_ENVIRONMENT a developer's shell may set (each test says which one it runs in)."""
    environment = {k: v for k, v in os.environ.items() if k != "ADBM_ENVIRONMENT"}
    return subprocess.run(
        [str(EXECUTABLE), *args],
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line of a failed command, after checking that it failed with
    exit code 2 and printed nothing else (no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    return lines[0]
