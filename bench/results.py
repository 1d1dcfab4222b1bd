"""Tables for the terminal and dated runs appended to bench/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable as plain text too)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def _memory_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024 / 1024
    return 0.0


def _commit() -> str:
    done = subprocess.run(
        ["git", "-C", str(RESULTS.parent), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "unknown"


def machine(packages: Sequence[str] = ()) -> str:
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    software = ", ".join([f"Python {platform.python_version()}", *versions])
    return (
        f"- **Machine:** {os.cpu_count()} vCPUs ({_cpu_model()}), {_memory_gb():.0f} GB RAM,"
        f" Linux {platform.release()}, {platform.machine()}; load average at the end {load}.\n"
        f"- **Software:** {software}.\n"
        f"- **Commit:** {_commit()}."
    )


def record(title: str, label: str, body: str, packages: Sequence[str] = ()) -> None:
    """Append one dated run to RESULTS.md."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    # Run as `python -m bench.x`, argv[0] is the file's absolute path: show the module instead.
    program = ["-m", spec.name] if spec is not None else [sys.argv[0]]
    command = shlex.join([".venv/bin/python", *program, *sys.argv[1:]])
    entry = (
        f"\n## {title}: {now} ({label})\n\n"
        f"- **Command:** `{command}`\n{machine(packages)}\n\n{body.rstrip()}\n"
    )
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(entry)
