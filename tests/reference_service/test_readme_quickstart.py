"""The README's quickstart, run exactly as written: from a fresh database to a served request.

The block between `<!-- quickstart: begin -->` and `<!-- quickstart: end -->` is read from the
README and run by bash from the repository root, so the README and this test cannot drift. The
commands take the database from the environment, which this test points at a database name and
app role of its own (so parallel runs and a developer's own `adbm` database are left alone), and
at a free port.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.reference_service.conftest import conninfo, drop_scratch

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(
    r"<!-- quickstart: begin -->\n```bash\n(?P<script>.*?)```\n<!-- quickstart: end -->", re.S
)


def quickstart() -> str:
    match = BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert match, "README.md has no quickstart block"
    return match["script"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop_group(pgid: int) -> None:
    """Stop every process the script left running (the backgrounded `serve`)."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)


def _role_attributes(name: str, role: str) -> tuple[bool, bool] | None:
    with psycopg.connect(conninfo(name)) as conn:
        row = conn.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", (role,)
        ).fetchone()
    return None if row is None else (row[0], row[1])


def test_the_readme_quickstart_serves_a_request(tmp_path: Path) -> None:
    script = quickstart()
    venv_cli = ROOT / ".venv" / "bin" / "adbm-service"
    if not venv_cli.exists():
        pytest.fail(f"the quickstart runs {venv_cli.relative_to(ROOT)}, as installed by the README")
    suffix = uuid.uuid4().hex
    name, role = f"adbm_test_{suffix}", f"adbm_app_{suffix}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADBM_")}
    env.update(
        ADBM_ADMIN_DATABASE_URL=conninfo(name),
        ADBM_DATABASE_URL=conninfo(name, user=role, password=f"pw-{suffix}"),
        ADBM_HTTP_PORT=str(_free_port()),
        # Its metrics listener too: 9090 may be another test's on a shared machine.
        ADBM_METRICS_PORT=str(_free_port()),
        ADBM_REDIS_KEY_PREFIX=f"test-{suffix}:",
    )
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        # Files, not pipes: the backgrounded server keeps its output open after the script ends.
        process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=180)
            attributes = _role_attributes(name, role) if code == 0 else None
        finally:
            _stop_group(process.pid)
            asyncio.run(drop_scratch(name, [role]))
    printed, logged = out.read_text(), err.read_text()
    assert code == 0, f"stdout:\n{printed}\nstderr:\n{logged}"
    assert json.loads(printed.splitlines()[-1]) == {"items": [], "next": None}, printed
    assert "refusing to serve" not in logged
    # The defaults made the service's role one that row-level security binds.
    assert attributes == (False, False)
