"""The benchmarks are not run in CI (they time things); this only checks that each one still
imports and parses its command line, so a rename elsewhere cannot break them unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "module", ["service_load", "ratelimit", "pagination", "cache", "fixed_rate", "profile_route"]
)
def test_help(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")


@pytest.mark.parametrize("script", ["operator_scale.py", "traced_operator.py"])
def test_script_help(script: str) -> None:
    """The scripts run by path (they import their siblings as top-level modules)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")
